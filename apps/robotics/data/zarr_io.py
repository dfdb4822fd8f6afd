"""Diffusion-policy ReplayBuffer zarr: `data/<field>` concatenated over time, `meta/episode_ends`.

Read as a directory store or a ``.zarr.zip``; written as zarr format 2 (what diffusion_policy and the
real PushT file use). Field ``img`` (float32 0-255 in PushT) becomes ``image`` (uint8) in memory and
back. Video-only episodes are recorded in the extra array ``meta/has_action`` (absent = all True).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from apps.robotics.data.episodes import EpisodeSet, data_error, frames_to_uint8

_TO_MEM = {"img": "image"}
_TO_FILE = {v: k for k, v in _TO_MEM.items()}


def _open(path: Path):
    import zarr

    if not path.exists():
        raise data_error(str(path), "file not found")
    try:
        if path.suffix == ".zip":
            store = zarr.storage.ZipStore(str(path), mode="r")
            return zarr.open_group(store, mode="r")
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for "not a group"
        raise data_error(str(path), f"not a replay-buffer zarr ({type(exc).__name__}: {exc})") from exc


def read_replay_zarr(path: str | os.PathLike, keys: list[str] | None = None,
                     episodes: list[int] | None = None, fps: float = 10.0, skip_images: bool = False) -> EpisodeSet:
    """Read a replay-buffer zarr.

    Args:
        path: directory or ``.zarr.zip``.
        keys: file field names to read (default: all under ``data/``).
        episodes: episode ids to read (default all); only their frames are decompressed.
        skip_images: leave out the image arrays (``img``) -- a state-only policy on PushT then reads
            a few MB instead of decompressing 2.8 GB of float32 frames.
    Returns:
        `EpisodeSet` with ``img`` renamed to ``image`` and cast to uint8 `(N, H, W, 3)`.
    """
    path = Path(path)
    g = _open(path)
    if "meta" not in g or "episode_ends" not in g["meta"]:
        raise data_error(str(path), "missing array", key="meta/episode_ends")
    if "data" not in g:
        raise data_error(str(path), "missing group", key="data")
    _check_chunks_present(g["meta/episode_ends"], path, "meta/episode_ends")
    ends = _check_ends(_read(g["meta/episode_ends"], slice(None), path, "meta/episode_ends"), path)
    has_action = np.asarray(g["meta/has_action"][:], bool) if "has_action" in g["meta"] else None
    if has_action is not None and has_action.shape != ends.shape:  # indexed by episode below
        raise data_error(str(path), f"has {has_action.shape} entries for {len(ends)} episodes", key="meta/has_action")
    names = sorted(g["data"].array_keys()) if keys is None else list(keys)
    if skip_images:
        names = [k for k in names if _TO_MEM.get(k, k) != "image" and not _TO_MEM.get(k, k).startswith("image_")]
    for k in names:
        if k not in g["data"]:
            raise data_error(str(path), f"missing array (have {sorted(g['data'].array_keys())})", key=f"data/{k}")
    starts = np.concatenate([[0], ends[:-1]])
    if episodes is not None:
        episodes = [int(e) for e in episodes]
        for e in episodes:
            if not 0 <= e < len(ends):
                raise data_error(str(path), f"episode id out of range (file has {len(ends)})", episode=e)
    ids = list(range(len(ends))) if episodes is None else episodes
    fields = {}
    for k in names:
        arr = g["data"][k]
        if len(arr.shape) == 0 or arr.shape[0] != ends[-1]:
            raise data_error(str(path), f"has {arr.shape[0] if arr.shape else 0} frames but "
                             f"meta/episode_ends says {int(ends[-1])}", key=f"data/{k}")
        _check_chunks_present(arr, path, f"data/{k}")  # once per array: it lists the store's keys
        if episodes is None:
            x = _read(arr, slice(None), path, f"data/{k}")
        else:
            x = np.concatenate([_read(arr, slice(int(starts[e]), int(ends[e])), path, f"data/{k}", e) for e in episodes])
        name = _TO_MEM.get(k, k)
        if name == "image":
            x = frames_to_uint8(x, str(path), f"data/{k}", np.cumsum(ends[ids] - starts[ids]), ids)
        fields[name] = x
    if episodes is not None:
        ends = np.cumsum(ends[episodes] - starts[episodes])
        has_action = None if has_action is None else has_action[episodes]
    return EpisodeSet(fields, ends, has_action, fps=fps, source=str(path), episode_ids=episodes)


def _check_ends(ends: np.ndarray, path: Path) -> np.ndarray:
    """``meta/episode_ends`` as int64; `DataError` for an empty, non-1-D or non-integer array."""
    ends = np.asarray(ends)
    if ends.size == 0:
        raise data_error(str(path), "no episodes (empty array)", key="meta/episode_ends")
    if ends.ndim != 1:
        raise data_error(str(path), f"expected a 1-D array, got shape {ends.shape}", key="meta/episode_ends")
    if not np.issubdtype(ends.dtype, np.integer):
        if not (np.issubdtype(ends.dtype, np.floating) and np.all(ends == np.round(ends))):
            raise data_error(str(path), f"episode ends must be integers, got {ends.dtype}", key="meta/episode_ends")
    return ends.astype(np.int64)


def _read(arr, rows: slice, path: Path, key: str, episode: int | None = None) -> np.ndarray:
    """Decompress `rows` of one array; a damaged chunk (truncated file, bad codec data) becomes a
    `DataError` naming the file and the array (``data/<field>``) instead of a codec traceback; call
    `_check_chunks_present` once per array first (a missing chunk reads without error)."""
    try:
        return arr[rows]
    except Exception as exc:  # blosc/zstd/numcodecs raise RuntimeError, ValueError, OSError ...
        raise data_error(str(path), f"cannot read the stored chunks ({type(exc).__name__}: {exc})",
                         episode=episode, key=key) from exc


def _check_chunks_present(arr, path: Path, key: str) -> None:
    """Raise `DataError` when chunk files of `arr` are missing (e.g. an interrupted copy): zarr reads a
    missing chunk as its fill value without complaint, so actions or states would silently be zeros."""
    try:
        present, expected = arr.nchunks_initialized, arr.nchunks
    except Exception:  # a store that cannot list its keys: nothing to check here, the read still runs
        return
    if present < expected:
        raise data_error(str(path), f"{expected - present} of {expected} chunk(s) missing (an incomplete copy? zarr "
                         "would read them as the fill value; a writer that skips all-fill chunks must be told to "
                         "write them)", key=key)


def count_replay_episodes(path: str | os.PathLike) -> int:
    """Number of episodes in a replay zarr (reads only ``meta/episode_ends``' shape)."""
    path = Path(path)
    g = _open(path)
    if "meta" not in g or "episode_ends" not in g["meta"]:
        raise data_error(str(path), "missing array", key="meta/episode_ends")
    return int(g["meta/episode_ends"].shape[0])


def write_replay_zarr(eps: EpisodeSet, path: str | os.PathLike, image_float: bool = True,
                      chunk_frames: int = 161, overwrite: bool = False) -> Path:
    """Write `eps` as a replay-buffer zarr, atomically (nothing partial on failure): a directory, or
    a zip store when `path` ends in ``.zip`` (e.g. ``out.zarr.zip``, which the reader opens as one).

    Args:
        image_float: store ``img`` as float32 0-255 like the PushT file (else uint8).
    """
    from dualsci.io import atomic_dir

    path = Path(path)
    if path.suffix == ".zip":
        return _write_zip(eps, path, image_float, chunk_frames, overwrite)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        _fill_group(eps, tmp, image_float, chunk_frames)
    return path


def _fill_group(eps: EpisodeSet, folder: Path, image_float: bool, chunk_frames: int) -> None:
    """Write the replay-buffer arrays (zarr format 2) into the empty directory `folder`."""
    import zarr

    g = zarr.open_group(str(folder), mode="w", zarr_format=2)
    data = g.create_group("data")
    for name, x in eps.fields.items():
        x = np.asarray(x)
        if name == "image" and image_float:
            x = x.astype(np.float32)
        chunks = (min(chunk_frames, len(x)),) + tuple(x.shape[1:])
        # every chunk is written, also an all-zero one, so that a missing chunk file means a damaged copy
        data.create_array(_TO_FILE.get(name, name), data=x, chunks=chunks, config={"write_empty_chunks": True})
    meta = g.create_group("meta")
    meta.create_array("episode_ends", data=eps.episode_ends.astype(np.int64), config={"write_empty_chunks": True})
    if not eps.has_action.all():
        meta.create_array("has_action", data=eps.has_action.astype(bool), config={"write_empty_chunks": True})


def _write_zip(eps: EpisodeSet, path: Path, image_float: bool, chunk_frames: int, overwrite: bool) -> Path:
    """Build the store in a scratch directory, then pack it into `path` (stored, not deflated: the
    chunks are already compressed) through an atomic rename."""
    import tempfile
    import zipfile

    from dualsci.io import atomic_write

    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output file already exists (refusing to overwrite)")
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent if path.parent.exists() else None) as d:
        _fill_group(eps, Path(d), image_float, chunk_frames)
        with atomic_write(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            for f in sorted(Path(d).rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(d).as_posix())
    return path
