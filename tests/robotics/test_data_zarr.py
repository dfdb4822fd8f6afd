from __future__ import annotations

import re

import numpy as np
import pytest

from apps.robotics.data import DataError, EpisodeSet, gather_columns, load_episodes
from apps.robotics.data.zarr_io import read_replay_zarr, write_replay_zarr
from tests.robotics.conftest import PUSHT


def test_real_pusht_layout(shared_file):
    path = shared_file(PUSHT)
    eps = read_replay_zarr(path, episodes=[0, 1])
    assert eps.n_episodes == 2
    assert eps.lengths.tolist() == [161, 118]
    assert eps.fields["image"].shape == (279, 96, 96, 3) and eps.fields["image"].dtype == np.uint8
    assert eps.fields["state"].shape == (279, 5)
    assert eps.fields["action"].shape == (279, 2)
    # actions are target agent positions in pixels
    a = eps.fields["action"]
    assert a.min() >= 0 and a.max() <= 512
    full = read_replay_zarr(path, keys=["action"])
    assert full.n_episodes == 206 and full.n_frames == 25650
    assert full.lengths.min() == 49 and full.lengths.max() == 246


def test_roundtrip_and_has_action(tmp_path, toy_eps):
    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    back = read_replay_zarr(out)
    assert back.episode_ends.tolist() == toy_eps.episode_ends.tolist()
    assert back.has_action.tolist() == toy_eps.has_action.tolist()
    for k, v in toy_eps.fields.items():
        np.testing.assert_array_equal(back.fields[k], v)
    assert load_episodes(out).n_frames == toy_eps.n_frames


def test_zip_store(tmp_path, toy_eps):
    import shutil

    d = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    shutil.make_archive(str(tmp_path / "z"), "zip", d)
    back = load_episodes(tmp_path / "z.zip")
    np.testing.assert_array_equal(back.fields["action"], toy_eps.fields["action"])


def test_missing_key_names_file_and_key(tmp_path, toy_eps):
    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    with pytest.raises(DataError, match=r"t\.zarr.*data/nope"):
        read_replay_zarr(out, keys=["nope"])


def test_nan_and_short_episode_errors(toy_eps):
    f = {k: v.copy() for k, v in toy_eps.fields.items()}
    f["state"][toy_eps.starts[2] + 3, 1] = np.nan
    bad = EpisodeSet(f, toy_eps.episode_ends, toy_eps.has_action, source="demo.zarr")
    with pytest.raises(DataError, match=r"demo\.zarr, episode 2, key 'state'.*NaN"):
        bad.validate()
    with pytest.raises(DataError, match=r"episode \d+.*shorter than the required horizon"):
        toy_eps.validate(min_length=1000)
    # NaN actions in a video-only episode are ignored; in an action episode they are an error.
    f2 = {k: v.copy() for k, v in toy_eps.fields.items()}
    f2["action"][toy_eps.starts[0]] = np.nan
    with pytest.raises(DataError, match=r"episode 0, key 'action'"):
        EpisodeSet(f2, toy_eps.episode_ends, toy_eps.has_action, source="x").validate()


def test_write_is_atomic(tmp_path, toy_eps):
    target = tmp_path / "exists.zarr"
    write_replay_zarr(toy_eps, target)
    with pytest.raises(FileExistsError):
        write_replay_zarr(toy_eps, target)
    bad = EpisodeSet({"x": np.zeros((toy_eps.n_frames, 2))}, toy_eps.episode_ends)
    bad.fields["y"] = object()  # not an array: the write fails half-way
    with pytest.raises(Exception):
        write_replay_zarr(bad, tmp_path / "partial.zarr")
    assert not (tmp_path / "partial.zarr").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_gather_columns_slices_and_sincos(toy_eps):
    from apps.robotics.data import gather_columns

    x = gather_columns({"s": np.array([[1.0, 2.0, np.pi / 2]])}, ["s[0:1]", "s[2:3]@sincos"])
    np.testing.assert_allclose(x, [[1.0, 1.0, 0.0]], atol=1e-6)
    with pytest.raises(DataError, match="key 'nope'"):
        gather_columns(toy_eps.fields, ["nope"], "f.zarr")


def test_state_only_module_skips_image_arrays(tmp_path, toy_eps):
    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.data.zarr_io import read_replay_zarr, write_replay_zarr

    path = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    assert "image" not in read_replay_zarr(path, skip_images=True).fields
    assert "image" in read_replay_zarr(path).fields
    dm = RoboticsDataModule(str(path), state_keys=["state"], use_image=False, horizon=8, val_episodes=1)
    assert "image" not in dm.load().fields
    dm.setup("fit")
    assert "obs_image" not in dm.train_set[0] and dm.train_set[0]["obs_state"].shape[-1] == toy_eps.fields["state"].shape[-1]
    assert "image" in RoboticsDataModule(str(path), state_keys=["state"], use_image=True, horizon=8).load().fields


def test_nan_image_pixels_are_an_error_not_black(tmp_path, toy_eps):
    from apps.robotics.data.convert import convert_main

    eps = toy_eps.select(range(4))
    eps.fields["image"] = eps.fields["image"].astype(np.float32)
    eps.fields["image"][eps.starts[2] + 1, 3, 4, 0] = np.nan
    path = write_replay_zarr(eps, tmp_path / "nanimg.zarr")
    with pytest.raises(DataError, match=r"nanimg\.zarr, episode 2, key 'data/img'.*NaN.*frame 1"):
        read_replay_zarr(path)
    with pytest.raises(DataError, match=r"episode 2, key 'data/img'"):
        read_replay_zarr(path, episodes=[3, 2])
    assert read_replay_zarr(path, episodes=[0, 1]).n_episodes == 2  # clean episodes still read
    assert convert_main([str(path), str(tmp_path / "o.zarr"), "--to", "zarr"]) == 2
    assert not (tmp_path / "o.zarr").exists()


def test_damaged_chunk_names_file_and_array(tmp_path, toy_eps):
    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr", chunk_frames=8)
    chunk = out / "data" / "state" / "2.0"  # as QA found it: a middle chunk cut to 20 bytes
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(DataError, match=r"t\.zarr, key 'data/state': cannot read"):
        read_replay_zarr(out)


def test_missing_chunk_is_named_not_read_as_zeros(tmp_path, toy_eps):
    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr", chunk_frames=8)
    (out / "data" / "action" / "1.0").unlink()  # an interrupted copy: zarr would fill the rows with 0
    with pytest.raises(DataError, match=r"t\.zarr, key 'data/action': 1 of \d+ chunk\(s\) missing"):
        read_replay_zarr(out)
    assert read_replay_zarr(out, keys=["state"]).n_frames == toy_eps.n_frames  # other arrays still read


def test_all_zero_chunks_are_written(tmp_path, toy_eps):
    """zarr 3 skips chunks equal to the fill value by default; ours are all on disk, so they read back."""
    eps = EpisodeSet({**toy_eps.fields, "action": np.zeros_like(toy_eps.fields["action"])}, toy_eps.episode_ends,
                     toy_eps.has_action)
    out = write_replay_zarr(eps, tmp_path / "z.zarr", chunk_frames=8)
    np.testing.assert_array_equal(read_replay_zarr(out).fields["action"], 0.0)


def test_zip_destination_is_a_zip_store(tmp_path, toy_eps):
    import zipfile

    from apps.robotics.data.convert import convert_main

    src = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    dst = tmp_path / "out.zarr.zip"
    assert convert_main([str(src), str(dst), "--to", "zarr"]) == 0
    assert dst.is_file() and zipfile.is_zipfile(dst)
    back = load_episodes(dst)
    np.testing.assert_array_equal(back.fields["image"], toy_eps.fields["image"])
    assert back.has_action.tolist() == toy_eps.has_action.tolist()
    assert convert_main([str(src), str(dst), "--to", "zarr"]) == 2  # exists, no --overwrite
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch left


@pytest.mark.parametrize("ends, problem", [([], "no episodes"), ([[4, 9]], "1-D"), ([4.5, 9.0], "integers")])
def test_empty_or_malformed_episode_ends(tmp_path, toy_eps, ends, problem):
    """An empty dataset was an IndexError traceback; float or 2-D ends were cast or failed unnamed."""
    import zarr

    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    g = zarr.open_group(str(out), mode="r+")
    del g["meta/episode_ends"]
    g["meta"].create_array("episode_ends", data=np.asarray(ends, np.float64 if problem == "integers" else np.int64))
    with pytest.raises(DataError, match=rf"t\.zarr, key 'meta/episode_ends': .*{problem}"):
        read_replay_zarr(out)


def test_concat_of_different_frame_shapes_names_the_set(toy_eps):
    """A video-only set of another image size (RoboticsDataModule(video_only_path=...)) was a bare numpy
    concatenation error in fit."""
    from apps.robotics.data.builtin import generate_toy_push

    other = generate_toy_push(2, seed=1, res=8)
    other.source = "video.zarr"
    with pytest.raises(DataError, match=r"video\.zarr, key 'image': per-frame shape \(8, 8, 3\) differs from "
                                        r"\(16, 16, 3\)"):
        EpisodeSet.concat([toy_eps, other])


@pytest.mark.parametrize("spec", [["state[3:7]"], ["state[4:]"], ["state[-5:]"], ["state[1:1]"]])
def test_column_slices_outside_the_field_are_errors(toy_eps, spec):
    """``state[3:7]`` of the toy task's 4-value state silently gave one column (Python slice clipping)."""
    with pytest.raises(DataError, match=rf"x\.zarr, key 'state': column slice '{re.escape(spec[0])}' selects outside "
                                        r"the field's 4 columns"):
        gather_columns(toy_eps.fields, spec, "x.zarr")
    assert gather_columns(toy_eps.fields, ["state[-4:]", "state[:4]"], "x.zarr").shape[1] == 8


def test_has_action_of_the_wrong_length(tmp_path, toy_eps):
    """With --episodes (episodes=[...]) a short meta/has_action was an IndexError traceback."""
    import zarr

    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    g = zarr.open_group(str(out), mode="r+")
    del g["meta/has_action"]
    g["meta"].create_array("has_action", data=np.ones(2, bool))
    for kw in ({}, {"episodes": [0, 1, 2]}):
        with pytest.raises(DataError, match=r"t\.zarr, key 'meta/has_action': has \(2,\) entries for 8 episodes"):
            read_replay_zarr(out, **kw)


@pytest.mark.parametrize("scale, problem", [(1 / 255, "look like 0..1 frames"), (2.0, "outside 0..255")])
def test_float_pixels_out_of_scale(tmp_path, toy_eps, scale, problem):
    """Float 0..1 frames were rounded to 0/1 (black images) and values above 255 clipped, without a word."""
    import zarr

    out = write_replay_zarr(toy_eps, tmp_path / "t.zarr")
    g = zarr.open_group(str(out), mode="r+")
    img = g["data/img"][:] * scale
    del g["data/img"]
    g["data"].create_array("img", data=img.astype(np.float32))
    with pytest.raises(DataError, match=rf"t\.zarr, key 'data/img': pixel values .*{re.escape(problem)}"):
        read_replay_zarr(out)
