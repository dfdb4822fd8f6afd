from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from apps.robotics.data import DataError, detect_format, load_episodes, save_episodes
from apps.robotics.data.convert import convert_main
from apps.robotics.data.lerobot import read_lerobot, write_lerobot
from apps.robotics.data.robomimic import read_robomimic, write_robomimic


def _close(a, b, key):
    if key == "image":
        assert np.abs(a.astype(float) - b.astype(float)).mean() < 6.0  # lossy video
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_roundtrip(tmp_path, toy_eps, version):
    root = write_lerobot(toy_eps, tmp_path / "ds", version=version)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == version and info["total_episodes"] == toy_eps.n_episodes
    if version == "v3.0":
        assert (root / "data/chunk-000/file-000.parquet").exists()
        assert (root / "meta/episodes/chunk-000/file-000.parquet").exists()
    else:
        assert (root / "data/chunk-000/episode_000000.parquet").exists()
        assert (root / "meta/episodes.jsonl").exists()
    back = read_lerobot(root)
    assert back.episode_ends.tolist() == toy_eps.episode_ends.tolist()
    assert back.has_action.tolist() == toy_eps.has_action.tolist()
    for k in toy_eps.fields:
        _close(back.fields[k], toy_eps.fields[k], k)
    sub = read_lerobot(root, episodes=[3, 1])
    _close(sub.fields["state"], toy_eps.select([3, 1]).fields["state"], "state")


def test_lerobot_png_images_are_lossless(tmp_path, toy_eps):
    root = write_lerobot(toy_eps, tmp_path / "png", version="v3.0", image_mode="image")
    assert not (root / "videos").exists()
    back = read_lerobot(root)
    np.testing.assert_array_equal(back.fields["image"], toy_eps.fields["image"])


def test_lerobot_unsupported_version_and_missing_video(tmp_path, toy_eps):
    root = write_lerobot(toy_eps, tmp_path / "ds", version="v3.0")
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v1.6"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"info\.json.*v1\.6.*not supported"):
        read_lerobot(root)
    root2 = write_lerobot(toy_eps, tmp_path / "ds2", version="v2.1")
    next((root2 / "videos").rglob("episode_000001.mp4")).unlink()
    with pytest.raises(DataError, match=r"episode_000001\.mp4.*not found"):
        read_lerobot(root2)


def test_av1_video_decodes(tmp_path, toy_eps):
    """LeRobot v3 ships AV1 (libsvtav1); check this CPU's PyAV decodes it."""
    import av

    from apps.robotics.data.video import read_video, write_video

    try:
        av.codec.Codec("libsvtav1", "w")
    except Exception:
        pytest.skip("no AV1 encoder in this PyAV build")
    frames = np.repeat(toy_eps.fields["image"][:12], 4, axis=1).repeat(4, axis=2)  # 64x64
    p = write_video(tmp_path / "a.mp4", frames, fps=10, codec="libsvtav1", crf=20)
    back = read_video(p, fps=10)
    assert back.shape == frames.shape
    assert np.abs(back.astype(float) - frames).mean() < 8.0


def test_robomimic_roundtrip_and_filter(tmp_path, toy_eps):
    import h5py

    p = write_robomimic(toy_eps, tmp_path / "d.hdf5")
    with h5py.File(p, "r") as f:
        assert f["data/demo_0/obs/agentview_image"].shape[1:] == (16, 16, 3)
        assert "actions" not in f["data/demo_7"]  # video-only episode
        assert json.loads(f["data"].attrs["env_args"])["env_name"] == "dualsci"
    back = read_robomimic(p)
    assert back.has_action.tolist() == toy_eps.has_action.tolist()
    for k in toy_eps.fields:
        _close(back.fields[k], toy_eps.fields[k], k)
    with h5py.File(p, "a") as f:
        del f["mask/train"]
        f.create_dataset("mask/valid", data=np.array([b"demo_10", b"demo_2"]))
        del f["data/demo_3/obs/agent_pos"]
    with pytest.raises(DataError, match=r"d\.hdf5, episode 3, key 'data/demo_3/obs/agent_pos'"):
        read_robomimic(p)
    with pytest.raises(DataError, match="mask/train"):
        read_robomimic(p, filter_key="train")


def test_convert_cli_chain(tmp_path, toy_eps, capsys):
    src = save_episodes(toy_eps, tmp_path / "a.zarr", "zarr")
    assert convert_main([str(src), str(tmp_path / "b"), "--to", "lerobot_v3", "--data-mb", "1e-6",
                         "--chunks-size", "2"]) == 0
    assert detect_format(tmp_path / "b") == "lerobot_v3"
    assert (tmp_path / "b/data/chunk-001/file-001.parquet").exists()  # split: one episode per file
    assert convert_main([str(tmp_path / "b"), str(tmp_path / "c.hdf5"), "--to", "robomimic"]) == 0
    assert convert_main([str(tmp_path / "c.hdf5"), str(tmp_path / "d"), "--to", "lerobot_v2.1", "--episodes", "3"]) == 0
    assert convert_main([str(tmp_path / "d"), str(tmp_path / "e.zarr"), "--to", "zarr"]) == 0
    back = load_episodes(tmp_path / "e.zarr")
    assert back.n_episodes == 3
    _close(back.fields["action"], toy_eps.select([0, 1, 2]).fields["action"], "action")
    # Bad input: clear message, non-zero exit, nothing written.
    (tmp_path / "junk").mkdir()
    assert convert_main([str(tmp_path / "junk"), str(tmp_path / "out.zarr"), "--to", "zarr"]) == 2
    assert "junk" in capsys.readouterr().out
    assert not (tmp_path / "out.zarr").exists()


def test_v3_packing_rule():
    from apps.robotics.data.lerobot import _file_position, _pack

    assert _pack([4, 4, 4, 9, 1], 8) == [[0, 1], [2], [3], [4]]  # a too-large episode gets its own file
    assert _pack([1, 1, 1], 100) == [[0, 1, 2]]
    assert _file_position(7, 3) == {"chunk_index": 2, "file_index": 1}


@pytest.mark.parametrize("image_mode", ["image", "video"])
def test_lerobot_v3_splits_files_at_size_limits_and_reads_back(tmp_path, toy_eps, image_mode):
    import pandas as pd

    whole = write_lerobot(toy_eps, tmp_path / "whole", image_mode=image_mode)
    assert len(list(whole.rglob("file-*.parquet"))) == 2  # one data file + the episode table
    # A limit of 1 byte puts every episode in its own file; 3 files per chunk folder.
    tiny = write_lerobot(toy_eps, tmp_path / "tiny", image_mode=image_mode, data_files_size_in_mb=1e-6,
                         video_files_size_in_mb=1e-6, chunks_size=3)
    n = toy_eps.n_episodes
    data_files = sorted(p.relative_to(tiny).as_posix() for p in (tiny / "data").rglob("*.parquet"))
    assert len(data_files) == n and data_files[3] == "data/chunk-001/file-000.parquet"
    info = json.loads((tiny / "meta/info.json").read_text())
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (3, 1e-6, 1e-6)
    if image_mode == "video":
        assert len(list((tiny / "videos").rglob("*.mp4"))) == n
    # A limit of about two episodes packs several episodes per file, with timestamps inside the file.
    sizes = [p.stat().st_size for p in (tiny / "data").rglob("*.parquet")]
    v_sizes = [p.stat().st_size for p in (tiny / "videos").rglob("*.mp4")] or [1]
    mid = write_lerobot(toy_eps, tmp_path / "mid", image_mode=image_mode,
                        data_files_size_in_mb=2.5 * max(sizes) / 2**20,
                        video_files_size_in_mb=2.5 * max(v_sizes) / 2**20)
    n_mid = len(list((mid / "data").rglob("*.parquet")))
    assert 1 < n_mid < n
    table = pd.read_parquet(mid / "meta/episodes/chunk-000/file-000.parquet")
    assert table["data/file_index"].is_monotonic_increasing and table["data/file_index"].max() == n_mid - 1
    if image_mode == "video":
        assert 1 < len(list((mid / "videos").rglob("*.mp4"))) < n
        assert (table["videos/observation.image/from_timestamp"] > 0).any()  # later episodes of a file
    for root in (tiny, mid):
        back = read_lerobot(root)
        ref = read_lerobot(whole)
        assert back.episode_ends.tolist() == toy_eps.episode_ends.tolist()
        assert back.has_action.tolist() == toy_eps.has_action.tolist()
        for k in toy_eps.fields:
            if k == "image" and image_mode == "video":
                _close(back.fields[k], toy_eps.fields[k], k)  # re-encoded per file: lossy, not bit-equal
            else:
                np.testing.assert_array_equal(back.fields[k], ref.fields[k], err_msg=k)
        sub = read_lerobot(root, episodes=[n - 1, 1])
        np.testing.assert_array_equal(sub.fields["state"], toy_eps.select([n - 1, 1]).fields["state"])
    stats_min = table["stats/observation.state/min"]  # per-episode statistics travel in the episode table
    e1 = toy_eps.episode(1)["state"].reshape(int(toy_eps.lengths[1]), -1)
    np.testing.assert_allclose(np.asarray(stats_min[1], float), e1.min(0), rtol=0, atol=1e-6)
    assert list(table["stats/observation.state/count"][1]) == [int(toy_eps.lengths[1])]
    if image_mode == "video":
        t = pd.read_parquet(tiny / "meta/episodes/chunk-000/file-000.parquet")
        assert (t["videos/observation.image/from_timestamp"] == 0).all()
        assert t["videos/observation.image/chunk_index"].tolist() == [e // 3 for e in range(n)]
    with pytest.raises(ValueError, match="must be > 0"):
        write_lerobot(toy_eps, tmp_path / "bad", data_files_size_in_mb=0)
    assert not (tmp_path / "bad").exists()


def test_truncated_info_json_and_grayscale_frames_name_the_source(tmp_path, toy_eps):
    from apps.robotics.data import EpisodeSet

    root = write_lerobot(toy_eps, tmp_path / "ds", version="v3.0", image_mode="image")
    info = root / "meta" / "info.json"
    info.write_text(info.read_text()[:40])
    with pytest.raises(DataError, match=r"ds/meta/info\.json: invalid JSON"):
        detect_format(root)
    gray = EpisodeSet({**toy_eps.fields, "image": toy_eps.fields["image"][..., 0]}, toy_eps.episode_ends,
                      toy_eps.has_action, source="gray.zarr")
    with pytest.raises(DataError, match=r"gray\.zarr, key 'image': camera frames must be \(N, H, W, 3\)"):
        write_lerobot(gray, tmp_path / "g")
    assert not (tmp_path / "g").exists()
    with pytest.raises(DataError, match=r"gray\.zarr, key 'image': camera frames must be"):  # were stored as a
        write_robomimic(gray, tmp_path / "g.hdf5")  # low-dimensional obs: read back, they joined the state
    assert not (tmp_path / "g.hdf5").exists()


def _edit_parquet(path, edit):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(edit(pq.read_table(path).to_pandas()), preserve_index=False), path)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_bad_tables_name_file_episode_key(tmp_path, toy_eps, version):
    """Each of these was a bare numpy/pyarrow/json error (or a KeyError traceback) naming nothing."""
    base = write_lerobot(toy_eps.select([0, 1]), tmp_path / "base", version=version)
    data = sorted((base / "data").rglob("*.parquet"))[-1]  # holds episode 1 in both layouts
    v3 = version == "v3.0"
    meta = base / ("meta/episodes/chunk-000/file-000.parquet" if v3 else "meta/episodes.jsonl")

    def info(edit):
        def f(root):
            i = json.loads((root / "meta/info.json").read_text())
            edit(i)
            (root / "meta/info.json").write_text(json.dumps(i))
        return f

    def rows(edit):
        return lambda root: _edit_parquet(root / data.relative_to(base), edit)

    def null_state(df):
        df["observation.state"] = [None if i == len(df) - 1 else v for i, v in enumerate(df["observation.state"])]
        return df

    cases = [
        (info(lambda i: i["features"]["observation.state"].update(shape=[5])), r"key 'observation.state': frame 0 "
         r"holds 4 values, info.json gives shape \[5\]"),
        (rows(null_state), r"episode 1, key 'observation.state': frame \d+: not numeric \(null value\)"),
        (rows(lambda df: df[(df["episode_index"] != 1) | (df["frame_index"] < 2)]),
         r"episode 1, key 'length': has 2 rows for this episode, the episode list says"),
        (lambda root: (root / data.relative_to(base)).write_bytes(b"PAR1 truncated"), r"cannot read parquet"),
        (info(lambda i: i.update(fps="ten")), r"info\.json, key 'fps': fps must be a positive number"),
        (info(lambda i: i["features"].update(action=[2])), r"key 'features/action': feature must be an object"),
        (info(lambda i: i.update(data_path="data/{chunk}/{shard}.parquet")), r"info\.json, key 'data_path': path "
         r"template 'data/\{chunk\}/\{shard\}\.parquet' cannot be filled"),  # was a KeyError traceback
    ]
    if v3:
        cases.append((lambda root: _edit_parquet(root / meta.relative_to(base), lambda df: df.drop(
            columns=["data/file_index"])), r"file-000\.parquet, key 'data/file_index': missing column"))
    else:
        cases.append((lambda root: (root / meta.relative_to(base)).write_text('{"length": 3}\n'),
                      r"episodes\.jsonl, key 'episode_index': line 1"))
        cases.append((info(lambda i: i.update(chunks_size="x")), r"key 'chunks_size': chunks_size must be an integer"))
    for i, (corrupt, message) in enumerate(cases):
        root = tmp_path / f"bad{i}"
        shutil.copytree(base, root)
        corrupt(root)
        with pytest.raises(DataError, match=message):
            read_lerobot(root)
        assert convert_main([str(root), str(tmp_path / f"out{i}.zarr"), "--to", "zarr"]) == 2
        assert not (tmp_path / f"out{i}.zarr").exists()


def test_robomimic_inconsistent_demos_and_attributes_are_named(tmp_path, toy_eps):
    import h5py

    cases = [
        (lambda f: (f["data/demo_1"].__delitem__("actions"), f["data/demo_1"].create_dataset(
            "actions", data=np.zeros((int(toy_eps.lengths[1]), 3), np.float32))),
         r"episode 1, key 'data/demo_1/actions': per-frame shape \(3,\) differs from \(2,\) in demo_0"),
        (lambda f: f["data"].attrs.__setitem__("env_args", "{not json"), r"key 'data.attrs\['env_args'\]': invalid JSON"),
        (lambda f: f["data/demo_1/obs"].__setitem__("agentview_image", f["data/demo_1/obs"].pop("agentview_image")[:] / 255.0),
         r"key 'data/demo_1/obs/agentview_image': pixel values .* look like 0\.\.1 frames"),  # were used unscaled
        (lambda f: f["data"].attrs.__setitem__("dualsci_state_keys", json.dumps(["nope"])),
         r"dualsci_state_keys.*names observations the demos do not have: \['nope'\]"),
    ]
    for i, (corrupt, message) in enumerate(cases):
        p = write_robomimic(toy_eps, tmp_path / f"d{i}.hdf5")
        with h5py.File(p, "a") as f:
            corrupt(f)
        with pytest.raises(DataError, match=rf"d{i}\.hdf5, {message}" if i == 0 else message):
            read_robomimic(p)


def test_convert_destination_under_a_file(tmp_path, toy_eps, capsys):
    src = save_episodes(toy_eps, tmp_path / "a.zarr", "zarr")
    (tmp_path / "f").write_text("x")
    for to in ("zarr", "lerobot_v3", "robomimic"):
        assert convert_main([str(src), str(tmp_path / "f" / "out"), "--to", to]) == 2
        assert f"{tmp_path / 'f'} is a file, not a folder" in capsys.readouterr().out  # was "[Errno 17] File exists"
    assert (tmp_path / "f").read_text() == "x"


def test_roundtrip_through_every_format(tmp_path, toy_eps):
    """zarr -> LeRobot v2.1 -> LeRobot v3 -> robomimic -> zarr gives the same episodes back (images within
    two generations of video coding)."""
    path = save_episodes(toy_eps, tmp_path / "a.zarr", "zarr")
    for i, fmt in enumerate(("lerobot_v2.1", "lerobot_v3", "robomimic", "zarr")):
        nxt = tmp_path / f"{i}.{'hdf5' if fmt == 'robomimic' else fmt}"
        assert convert_main([str(path), str(nxt), "--to", fmt]) == 0
        path = nxt
    back = load_episodes(path)
    assert back.episode_ends.tolist() == toy_eps.episode_ends.tolist()
    assert back.has_action.tolist() == toy_eps.has_action.tolist()
    assert set(toy_eps.fields) <= set(back.fields)
    for k in toy_eps.fields:
        if k == "image":
            assert np.abs(back.fields[k].astype(float) - toy_eps.fields[k].astype(float)).mean() < 8.0
        else:
            np.testing.assert_array_equal(back.fields[k], toy_eps.fields[k])  # video-only actions stay zero


def test_robomimic_reader_on_a_folder(tmp_path):
    with pytest.raises(DataError, match=r"is a folder, not a robomimic HDF5 file"):  # was h5py's errno dump
        read_robomimic(tmp_path)


def test_lerobot_png_cells_that_cannot_be_read_are_named(tmp_path, toy_eps):
    """A null cell, a missing image path or undecodable bytes were PIL/OS tracebacks naming nothing."""
    base = write_lerobot(toy_eps.select([0]), tmp_path / "base", version="v3.0", image_mode="image")
    data = next((base / "data").rglob("*.parquet"))
    for i, cell in enumerate((None, {"bytes": None, "path": "missing.png"}, {"bytes": b"not a png", "path": None})):
        root = shutil.copytree(base, tmp_path / f"bad{i}")

        def edit(df, cell=cell):
            df["observation.image"] = [cell if j == 2 else v for j, v in enumerate(df["observation.image"])]
            return df

        _edit_parquet(root / data.relative_to(base), edit)
        with pytest.raises(DataError, match=r"file-000\.parquet, episode 0, key 'observation.image': frame 2: "
                                            r"cannot read the image"):
            read_lerobot(root)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_string_features_are_skipped(tmp_path, toy_eps, version):
    """A per-frame text feature (dtype "string", e.g. a language instruction) failed the whole read
    as "not numeric"; it is not an observation and is skipped, the numeric fields read as before."""
    base = write_lerobot(toy_eps.select([0, 1]), tmp_path / "base", version=version)
    info_path = base / "meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["language_instruction"] = {"dtype": "string", "shape": [1], "names": None}
    info_path.write_text(json.dumps(info))
    for data in (base / "data").rglob("*.parquet"):
        _edit_parquet(data, lambda df: df.assign(language_instruction="push the T"))
    got = read_lerobot(base)
    assert "language_instruction" not in got.fields
    np.testing.assert_array_equal(got.fields["action"], toy_eps.select([0, 1]).fields["action"])
