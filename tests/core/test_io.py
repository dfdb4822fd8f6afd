"""dualsci.io: atomic outputs, manifests and the demo index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dualsci.io import (JsonlManifest, atomic_dir, atomic_write, blocking_file, is_atomic_temporary, output_dir_problem,
                        sha256_file, write_index_html, write_json_atomic)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_write(target, "w") as handle:
            handle.write("new")
            raise ValueError
    assert target.read_text() == "old"
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new"


def test_atomic_dir_refuses_existing_and_cleans_up(tmp_path):
    target = tmp_path / "dataset"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"
    with pytest.raises(FileExistsError, match="dataset"):
        with atomic_dir(target):
            pass
    with pytest.raises(KeyError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("b")
            raise KeyError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]
    assert (target / "a.txt").exists() and not (target / "b.txt").exists()


def test_json_and_checksum(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"x": np.float32(1.5), "a": np.arange(3)})
    assert json.loads(path.read_text()) == {"x": 1.5, "a": [0, 1, 2]}
    write_json_atomic(path, {"ssr": float("inf"), "rmse": np.float64("nan"), "v": np.array([1.0, np.nan]), "ok": True})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON: other parsers refuse those tokens
    assert json.loads(text) == {"ssr": None, "rmse": None, "v": [1.0, None], "ok": True}
    assert len(sha256_file(path)) == 64
    assert sha256_file(path) == sha256_file(path)


def test_manifest_resume_ignores_torn_tail(tmp_path):
    manifest = JsonlManifest(tmp_path / "m.jsonl", key="id")
    manifest.append({"id": 1, "v": "a"})
    manifest.append({"id": 2, "v": "b"})
    with open(manifest.path, "a") as handle:
        handle.write('{"id": 3, "v"')  # killed mid-write
    assert manifest.done_keys() == {1, 2}
    manifest.append({"id": 3, "v": "c"})
    assert [r["id"] for r in manifest.records()] == [1, 2, 3]
    with pytest.raises(KeyError, match="id"):
        manifest.append({"v": "no key"})


def test_index_html_links_reports(tmp_path):
    path = write_index_html(
        tmp_path,
        [
            {"name": "core", "report": "core/report.html", "status": "ok", "seconds": 12.0},
            {"name": "echo", "report": None, "status": "failed", "detail": "<boom>"},
        ],
    )
    page = path.read_text()
    assert 'href="core/report.html"' in page and "failed" in page and "&lt;boom&gt;" in page


def test_atomic_outputs_get_the_mode_of_a_plain_open(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt", "w") as handle:
            handle.write("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_atomic_dir_names_a_file_in_the_way(tmp_path):
    blocker = tmp_path / "report.txt"
    blocker.write_text("keep me")
    for overwrite in (False, True):  # a folder never replaces a file
        with pytest.raises(FileExistsError, match="report.txt: is a file, not an output folder"):
            with atomic_dir(blocker, overwrite=overwrite):
                pass
    with pytest.raises(NotADirectoryError, match=r"out: cannot create the output folder, .*report.txt is a file"):
        with atomic_dir(blocker / "sub" / "out"):
            pass
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


def test_output_dir_problem_names_the_path_and_the_file_in_the_way(tmp_path):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert output_dir_problem(tmp_path) is None and output_dir_problem(tmp_path / "new" / "deeper") is None
    assert output_dir_problem(a_file) == f"{a_file}: --out exists and is not a folder"
    deep = a_file / "sub" / "out"
    assert output_dir_problem(deep, "--dir") == f"{deep}: --dir cannot be created: {a_file} is a file, not a folder"
    assert blocking_file(deep) == a_file and blocking_file(tmp_path / "new" / "x") is None



def test_is_atomic_temporary_knows_the_writers_names(tmp_path, monkeypatch):
    import dualsci.io.atomic as atomic_mod

    def killed(*_):
        raise KeyboardInterrupt

    # a job killed before the rename keeps its temporary: the rename fails and the clean-up never runs
    monkeypatch.setattr(atomic_mod.os, "replace", killed)
    monkeypatch.setattr(atomic_mod.os, "unlink", lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "a.json", "w") as fh:
            fh.write("{")
    monkeypatch.undo()
    left = list(tmp_path.iterdir())
    assert len(left) == 1 and is_atomic_temporary(left[0])
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / ".hidden").write_text("")
    (tmp_path / ".dir.tmp").mkdir()
    assert not any(is_atomic_temporary(tmp_path / n) for n in ("a.json", ".hidden", ".dir.tmp"))
