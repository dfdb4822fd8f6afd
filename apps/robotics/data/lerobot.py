"""LeRobotDataset v2.1 and v3.0 readers and writers (pyarrow + PyAV; LeRobot itself not needed).

v2.1: one parquet and one mp4 per episode, ``meta/episodes.jsonl``, ``meta/tasks.jsonl``.
v3.0: many episodes per parquet/mp4 file, ``meta/episodes/chunk-*/file-*.parquet`` with row and
video-timestamp ranges per episode, ``meta/tasks.parquet``.

Mapping to `EpisodeSet` names: ``observation.state`` <-> ``state``, ``action`` <-> ``action``, the first
camera (``observation.image`` or ``observation.images.<cam>``) <-> ``image``, other cameras ->
``image_<cam>``, other ``observation.<x>`` <-> ``<x>``. Video-only episodes: the dataset has no
``action`` feature, or ``info.json`` lists them under ``dualsci_video_only_episodes``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from apps.robotics.data.episodes import EpisodeSet, data_error
from apps.robotics.data.video import read_video, write_video

SUPPORTED = ("v2.0", "v2.1", "v3.0")
_BOOK = {"timestamp", "frame_index", "episode_index", "index", "task_index"}


def _mem_name(feature: str, cams: list[str]) -> str:
    if feature in cams:
        return "image" if feature == cams[0] else "image_" + feature.split(".")[-1]
    if feature == "observation.state":
        return "state"
    if feature.startswith("observation."):
        return feature[len("observation."):]
    return feature


def _file_name(name: str) -> str:
    if name == "image":
        return "observation.image"
    if name.startswith("image_"):
        return "observation.images." + name[len("image_"):]
    if name == "state":
        return "observation.state"
    if name == "action":
        return "action"
    return "observation." + name


def load_info_json(info_path: Path) -> dict:
    """Parse ``meta/info.json``; a truncated or non-object file is a `DataError` naming it."""
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise data_error(str(info_path), f"invalid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise data_error(str(info_path), f"expected a JSON object, got {type(info).__name__}")
    return info


def read_info(root: Path) -> dict:
    info_path = root / "meta" / "info.json"
    if not info_path.exists():
        raise data_error(str(root), "not a LeRobot dataset", key="meta/info.json")
    info = load_info_json(info_path)
    version = info.get("codebase_version")
    if version not in SUPPORTED:
        raise data_error(str(info_path), f"LeRobot codebase_version {version!r} is not supported "
                         f"(this reader handles {', '.join(SUPPORTED)})", key="codebase_version")
    for k in ("features", "fps", "data_path"):
        if k not in info:
            raise data_error(str(info_path), "missing key", key=k)
    if not isinstance(info["features"], dict):
        raise data_error(str(info_path), f"expected an object of features, got {type(info['features']).__name__}",
                         key="features")
    for name, feat in info["features"].items():
        if not isinstance(feat, dict):
            raise data_error(str(info_path), f"feature must be an object, got {type(feat).__name__}",
                             key=f"features/{name}")
    fps = info["fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise data_error(str(info_path), f"fps must be a positive number, got {fps!r}", key="fps")
    return info


def _path_from(info: dict, key: str, values: dict, root: Path) -> str:
    """``info[key]`` (a path template such as ``data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet``)
    filled in; a template with other fields or a bad format is a `DataError` naming info.json and the key."""
    try:
        return str(info[key]).format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise data_error(str(root / "meta" / "info.json"), f"path template {info[key]!r} cannot be filled from "
                         f"{sorted(values)} ({type(exc).__name__}: {exc})", key=key) from exc


def _read_parquet(path: Path, episode: int | None = None):
    """A parquet file as a pandas frame; a damaged one is a `DataError` naming it (not pyarrow's advice)."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pandas()
    except Exception as exc:  # noqa: BLE001 -- pyarrow raises ArrowInvalid, OSError ... for damaged files
        raise data_error(str(path), f"cannot read parquet ({type(exc).__name__}: {str(exc).split('. ')[0]})",
                         episode=episode) from exc


def _numeric_column(rows, k: str, shape: tuple, dpath: Path, e: int) -> np.ndarray:
    """Feature `k` of one episode's rows as `(T, *shape)` float32; null, non-numeric or wrongly sized
    cells are a `DataError` naming the file, episode, key and frame."""
    vals = []
    for i, v in enumerate(rows[k]):
        try:
            if v is None:
                raise ValueError("null value")
            vals.append(np.asarray(v, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError) as exc:
            raise data_error(str(dpath), f"frame {i}: not numeric ({exc})", episode=e, key=k) from exc
    known = all(int(d) > 0 for d in shape)  # a shape of [-1] (or none) takes the rows as they are
    want = int(np.prod(shape)) if known else len(vals[0])
    for i, v in enumerate(vals):
        if len(v) != want:
            raise data_error(str(dpath), f"frame {i} holds {len(v)} values, info.json gives shape {list(shape)}",
                             episode=e, key=k)
    return np.stack(vals).reshape((len(vals), *(shape if known else (want,)))).astype(np.float32)


def read_lerobot(root: str | os.PathLike, episodes: list[int] | None = None) -> EpisodeSet:
    """Read a LeRobot v2.x or v3.0 dataset folder into an `EpisodeSet` (videos decoded to uint8)."""
    root = Path(root)
    info = read_info(root)
    fps = float(info["fps"])
    feats = info["features"]
    cams = [k for k, f in feats.items() if f.get("dtype") in ("video", "image")]
    # text features (a per-frame language instruction, dtype "string") are not observations: skipped
    numeric = [k for k, f in feats.items() if k not in _BOOK and k not in cams and f.get("dtype") != "string"]
    v3 = info["codebase_version"].startswith("v3")
    ep_table = _episode_table(root, info, v3)
    ids = sorted(ep_table) if episodes is None else [int(e) for e in episodes]
    if not ids:
        raise data_error(str(root), "no episodes", key="meta/episodes" + ("" if v3 else ".jsonl"))
    for e in ids:
        if e not in ep_table:
            raise data_error(str(root), "episode not listed in meta", episode=e)
    fields: dict[str, list] = {_mem_name(k, cams): [] for k in numeric + cams}
    lengths, tables, videos = [], {}, {}
    for e in ids:
        rec = ep_table[e]
        dpath = root / _path_from(info, "data_path", rec["data_fmt"], root)
        if dpath not in tables:
            if not dpath.exists():
                raise data_error(str(dpath), "data file not found", episode=e)
            tables[dpath] = _read_parquet(dpath, e)
        df = tables[dpath]
        rows = df[df["episode_index"] == e].sort_values("frame_index")
        if len(rows) == 0:
            raise data_error(str(dpath), "no rows for this episode", episode=e)
        if rec.get("length") is not None and int(rec["length"]) != len(rows):  # rows lost or duplicated
            raise data_error(str(dpath), f"has {len(rows)} rows for this episode, the episode list says "
                             f"{int(rec['length'])}", episode=e, key="length")
        lengths.append(len(rows))
        if "task_index" in rows.columns:
            fields.setdefault("task_index", []).append(rows["task_index"].to_numpy(np.int64))
        for k in numeric:
            if k not in rows.columns:
                raise data_error(str(dpath), "feature listed in info.json is missing", episode=e, key=k)
            shape = tuple(feats[k].get("shape") or [-1])
            fields[_mem_name(k, cams)].append(_numeric_column(rows, k, shape, dpath, e))
        for cam in cams:
            frames = _camera_frames(root, info, feats[cam], cam, rec, rows, e, videos, fps, dpath)
            fields[_mem_name(cam, cams)].append(frames)
    out = {k: np.concatenate(v) for k, v in fields.items() if v}
    ends = np.cumsum(lengths)
    video_only = set(info.get("dualsci_video_only_episodes", []))
    has_action = np.array([("action" in feats) and (e not in video_only) for e in ids], bool)
    tasks = [ep_table[e].get("tasks") for e in ids]
    return EpisodeSet(out, ends, has_action, fps=fps, source=str(root),
                      meta={"tasks": tasks, "robot_type": info.get("robot_type")}, episode_ids=ids)


def lerobot_episode_ids(root: str | os.PathLike) -> list[int]:
    """The episode indices a LeRobot dataset lists in its meta, sorted (no frames are read)."""
    root = Path(root)
    info = read_info(root)
    return sorted(_episode_table(root, info, info["codebase_version"].startswith("v3")))


def _episode_table(root: Path, info: dict, v3: bool) -> dict[int, dict]:
    table = {}
    if not v3:
        path = root / "meta" / "episodes.jsonl"
        if not path.exists():
            raise data_error(str(root), "missing episode list", key="meta/episodes.jsonl")
        chunks = info.get("chunks_size", 1000)
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise data_error(str(root / "meta" / "info.json"), f"chunks_size must be an integer >= 1, got {chunks!r}",
                             key="chunks_size")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    e = int(rec["episode_index"])
                except (ValueError, TypeError, KeyError) as exc:  # bad JSON, not an object, no/odd index
                    raise data_error(str(path), f"line {n}: not an episode record ({type(exc).__name__}: {exc})",
                                     key="episode_index") from exc
                fmt = {"episode_chunk": e // chunks, "episode_index": e}
                table[e] = {"tasks": rec.get("tasks"), "length": rec.get("length"), "data_fmt": fmt,
                            "video_fmt": fmt, "v3": False}
        return table
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise data_error(str(root), "missing episode table", key="meta/episodes/chunk-*/file-*.parquet")
    videos = [k for k, f in info["features"].items() if isinstance(f, dict) and f.get("dtype") == "video"]
    need = ["episode_index", "length", "data/chunk_index", "data/file_index"] + [
        f"videos/{cam}/{c}" for cam in videos for c in ("chunk_index", "file_index", "from_timestamp")]
    for f in files:
        df = _read_parquet(f)
        for col in need:
            if col not in df.columns:
                raise data_error(str(f), "missing column of the episode table", key=col)
        for _, rec in df.iterrows():
            e = int(rec["episode_index"])
            table[e] = {
                "tasks": list(rec["tasks"]) if "tasks" in rec and rec["tasks"] is not None else None,
                "length": int(rec["length"]),
                "data_fmt": {"chunk_index": int(rec["data/chunk_index"]), "file_index": int(rec["data/file_index"])},
                "rec": rec, "v3": True,
            }
    return table


def _camera_frames(root, info, feat, cam, rec, rows, e, cache, fps, dpath) -> np.ndarray:
    if feat.get("dtype") == "image":
        from io import BytesIO

        from PIL import Image

        if cam not in rows.columns:
            raise data_error(str(dpath), "image column missing", episode=e, key=cam)
        imgs = []
        for i, cell in enumerate(rows[cam]):
            try:  # null cells, missing files and undecodable bytes would be PIL/OS tracebacks naming nothing
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                if data is None and isinstance(cell, dict) and cell.get("path"):
                    data = (root / cell["path"]).read_bytes()
                if data is None:
                    raise ValueError("no image bytes and no path")
                imgs.append(np.asarray(Image.open(BytesIO(data)).convert("RGB")))
            except (OSError, ValueError, TypeError) as exc:
                raise data_error(str(dpath), f"frame {i}: cannot read the image ({type(exc).__name__}: {exc})",
                                 episode=e, key=cam) from exc
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise data_error(str(dpath), f"frames of different sizes {sorted(shapes)}", episode=e, key=cam)
        return np.stack(imgs)
    if "video_path" not in info or not info["video_path"]:
        raise data_error(str(root / "meta/info.json"), "video feature but no video_path", key=cam)
    if rec["v3"]:
        r = rec["rec"]
        fmt = {"video_key": cam, "chunk_index": int(r[f"videos/{cam}/chunk_index"]),
               "file_index": int(r[f"videos/{cam}/file_index"])}
        offset = float(r[f"videos/{cam}/from_timestamp"])
    else:
        fmt = dict(rec["video_fmt"], video_key=cam)
        offset = 0.0
    vpath = root / _path_from(info, "video_path", fmt, root)
    if vpath not in cache:
        cache[vpath] = read_video(vpath, fps=fps)
    frames = cache[vpath]
    idx = np.rint((offset + rows["timestamp"].to_numpy(np.float64)) * fps).astype(int)
    if idx.max() >= len(frames):
        raise data_error(str(vpath), f"video has {len(frames)} frames, episode needs frame {int(idx.max())}",
                         episode=e, key=cam)
    out = frames[idx]
    shape = feat.get("shape")
    if shape and tuple(out.shape[1:]) != tuple(shape) and tuple(out.shape[1:]) != tuple(shape[1:] + shape[:1]):
        raise data_error(str(vpath), f"frames are {out.shape[1:]}, info.json says {tuple(shape)}", episode=e, key=cam)
    return out


# ------------------------------------------------------------------------------------------- writers
def _features(eps: EpisodeSet, fps: float, image_mode: str = "video") -> dict:
    feats = {}
    for name, x in eps.fields.items():
        if name == "task_index":  # a bookkeeping column of every LeRobot frame table
            continue
        fname = _file_name(name)
        if (name == "image" or name.startswith("image_")) and image_mode == "image":
            feats[fname] = {"dtype": "image", "shape": list(x.shape[1:]), "names": ["height", "width", "channel"]}
        elif name == "image" or name.startswith("image_"):
            feats[fname] = {"dtype": "video", "shape": list(x.shape[1:]), "names": ["height", "width", "channel"],
                            "info": {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": "yuv420p"}}
        else:
            feats[fname] = {"dtype": "float32", "shape": list(x.shape[1:]) or [1], "names": None}
    if not eps.has_action.any() and "action" in feats:
        del feats["action"]
    for k, dt in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                  ("index", "int64"), ("task_index", "int64")):
        feats[k] = {"dtype": dt, "shape": [1], "names": None}
    return feats


def _frame_table(eps: EpisodeSet, episodes: list[int], feats: dict, index0: int):
    import pyarrow as pa

    cols: dict[str, list] = {}
    for e in episodes:
        ep = eps.episode(e)
        T = int(eps.lengths[e])
        for name, x in ep.items():
            fname = _file_name(name)
            if fname not in feats or feats[fname]["dtype"] == "video" or name == "task_index":
                continue
            if feats[fname]["dtype"] == "image":  # PNG bytes per frame, LeRobot's image struct
                cols.setdefault(fname, []).append([{"bytes": _png(img), "path": None} for img in x])
                continue
            cols.setdefault(fname, []).append(x.reshape(T, -1).astype(np.float32))
        cols.setdefault("timestamp", []).append((np.arange(T) / eps.fps).astype(np.float32))
        cols.setdefault("frame_index", []).append(np.arange(T, dtype=np.int64))
        cols.setdefault("episode_index", []).append(np.full(T, e, np.int64))
        task = ep.get("task_index")
        cols.setdefault("task_index", []).append(np.zeros(T, np.int64) if task is None else task.astype(np.int64))
    arrays = {}
    for k, parts in cols.items():
        if isinstance(parts[0], list):
            arrays[k] = pa.array([cell for part in parts for cell in part])
            continue
        x = np.concatenate(parts)
        if x.ndim == 2:
            arrays[k] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
        else:
            arrays[k] = pa.array(x)
    n = len(arrays["timestamp"])
    arrays["index"] = pa.array(np.arange(index0, index0 + n, dtype=np.int64))
    return pa.table(arrays)


def _png(img: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _task(eps: EpisodeSet) -> str:
    return str(eps.meta.get("task", "push the block to the goal"))


def _task_names(eps: EpisodeSet) -> list[str]:
    """One name per task id: the set's task for id 0, ``task k`` for further ids."""
    n = int(eps.fields["task_index"].max()) + 1 if "task_index" in eps.fields else 1
    return [_task(eps)] + [f"task {k}" for k in range(1, n)]


def _info(eps: EpisodeSet, version: str, feats: dict, extra: dict) -> dict:
    info = {"codebase_version": version, "robot_type": eps.meta.get("robot_type") or "unknown",
            "total_episodes": eps.n_episodes, "total_frames": eps.n_frames, "total_tasks": len(_task_names(eps)),
            "chunks_size": 1000, "fps": eps.fps, "splits": {"train": f"0:{eps.n_episodes}"},
            "features": feats}
    info.update(extra)
    video_only = [int(e) for e in np.nonzero(~eps.has_action)[0]]
    if video_only and "action" in feats:
        info["dualsci_video_only_episodes"] = video_only
    return info


def write_lerobot(eps: EpisodeSet, root: str | os.PathLike, version: str = "v3.0", codec: str = "libx264",
                  overwrite: bool = False, image_mode: str = "video", data_files_size_in_mb: float = 100.0,
                  video_files_size_in_mb: float = 200.0, chunks_size: int = 1000) -> Path:
    """Write `eps` as a LeRobot dataset folder (``version`` "v2.1" or "v3.0"), atomically.

    ``image_mode="video"`` encodes cameras as mp4 (LeRobot's default); ``"image"`` stores lossless PNG
    bytes in the parquet rows (LeRobot's ``dtype: image`` features). v3.0 only: whole episodes are
    packed into ``data/chunk-C/file-F.parquet`` and ``videos/<key>/chunk-C/file-F.mp4`` files of at most
    ``data_files_size_in_mb`` / ``video_files_size_in_mb`` (LeRobot's defaults 100 / 200; an episode
    larger than the limit gets a file of its own), ``chunks_size`` files per chunk folder (1000)."""
    if image_mode not in ("video", "image"):
        raise ValueError(f"image_mode must be one of 'video', 'image', got {image_mode!r}")
    if not (data_files_size_in_mb > 0 and video_files_size_in_mb > 0 and int(chunks_size) >= 1):
        raise ValueError(f"data_files_size_in_mb ({data_files_size_in_mb}) and video_files_size_in_mb "
                         f"({video_files_size_in_mb}) must be > 0 and chunks_size ({chunks_size}) >= 1")
    import pyarrow.parquet as pq

    from dualsci.io import atomic_dir

    if version not in ("v2.1", "v3.0"):
        raise ValueError(f"version must be one of 'v2.1', 'v3.0', got {version!r}")
    eps.check_camera_frames()
    feats = _features(eps, eps.fps, image_mode)
    cams = [k for k, f in feats.items() if f["dtype"] == "video"]
    root = Path(root)
    with atomic_dir(root, overwrite=overwrite) as tmp:
        (tmp / "meta").mkdir()
        task = _task(eps)
        if version == "v2.1":
            extra = {"total_chunks": (eps.n_episodes - 1) // 1000 + 1, "total_videos": len(cams) * eps.n_episodes,
                     "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                     "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
            lines, stats, index0 = [], [], 0
            for e in range(eps.n_episodes):
                table = _frame_table(eps, [e], feats, index0)
                index0 += table.num_rows
                p = tmp / extra["data_path"].format(episode_chunk=e // 1000, episode_index=e)
                p.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table, p)
                for cam in cams:
                    frames = eps.episode(e)[_mem_name(cam, cams)]
                    write_video(tmp / extra["video_path"].format(episode_chunk=e // 1000, video_key=cam,
                                                                 episode_index=e),
                                frames, eps.fps, codec)
                lines.append(json.dumps({"episode_index": e, "tasks": [task], "length": int(eps.lengths[e])}))
                stats.append(json.dumps({"episode_index": e, "stats": _episode_stats(eps, e, feats)}))
            (tmp / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
            (tmp / "meta/episodes_stats.jsonl").write_text("\n".join(stats) + "\n")
            (tmp / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": k, "task": t}) + "\n"
                                                          for k, t in enumerate(_task_names(eps))))
        else:
            extra = {"chunks_size": int(chunks_size), "data_files_size_in_mb": data_files_size_in_mb,
                     "video_files_size_in_mb": video_files_size_in_mb,
                     "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                     "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
            _write_v3_files(eps, tmp, feats, cams, extra, codec, task)
        (tmp / "meta/info.json").write_text(json.dumps(_info(eps, version, feats, extra), indent=2))
        (tmp / "meta/stats.json").write_text(json.dumps(_global_stats(eps, feats), indent=2))
    return root


def _pack(sizes: list[int], limit_bytes: float) -> list[list[int]]:
    """Greedy packing of consecutive episodes into files: a new file starts when adding the next
    episode would pass the limit (an episode larger than the limit gets a file of its own)."""
    groups: list[list[int]] = []
    total = 0
    for e, size in enumerate(sizes):
        if not groups or (groups[-1] and total + size > limit_bytes):
            groups.append([])
            total = 0
        groups[-1].append(e)
        total += size
    return groups


def _file_position(k: int, chunks_size: int) -> dict:
    """The k-th file of a stream -> its ``{chunk_index, file_index}`` (``chunks_size`` files per chunk)."""
    return {"chunk_index": k // chunks_size, "file_index": k % chunks_size}


def _write_v3_files(eps: EpisodeSet, tmp: Path, feats: dict, cams: list[str], info: dict, codec: str,
                    task: str) -> None:
    """v3.0 data, video and episode-table files, split at the size limits in `info`.

    Sizes are planned per episode (its parquet table and its mp4 encoded alone), then consecutive
    episodes are packed up to the limit; a file's real size differs from the sum of its episodes'
    by container overhead and (for video) the encoder's cross-episode references.
    """
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from apps.robotics.data.video import encoded_size, write_video

    n, mb = eps.n_episodes, 1024.0 * 1024.0
    chunks = int(info["chunks_size"])
    tables, index0 = [], 0
    for e in range(n):
        tables.append(_frame_table(eps, [e], feats, index0))
        index0 += tables[-1].num_rows
    sizes = []
    for t in tables:
        buf = io.BytesIO()
        pq.write_table(t, buf)
        sizes.append(buf.getbuffer().nbytes)
    rows: dict[str, list] = {"episode_index": list(range(n)), "tasks": [[task]] * n,
                             "length": [int(v) for v in eps.lengths], "data/chunk_index": [0] * n,
                             "data/file_index": [0] * n, "dataset_from_index": [int(v) for v in eps.starts],
                             "dataset_to_index": [int(v) for v in eps.episode_ends]}
    for k, group in enumerate(_pack(sizes, info["data_files_size_in_mb"] * mb)):
        pos = _file_position(k, chunks)
        path = tmp / info["data_path"].format(**pos)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([tables[e] for e in group]), path)
        for e in group:
            rows["data/chunk_index"][e], rows["data/file_index"][e] = pos["chunk_index"], pos["file_index"]
    for cam in cams:
        frames = eps.fields[_mem_name(cam, cams)]
        per_ep = [frames[eps.starts[e]:eps.episode_ends[e]] for e in range(n)]
        sizes = [encoded_size(f, eps.fps, codec) for f in per_ep]
        for key in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
            rows[f"videos/{cam}/{key}"] = [0] * n
        for k, group in enumerate(_pack(sizes, info["video_files_size_in_mb"] * mb)):
            pos = _file_position(k, chunks)
            write_video(tmp / info["video_path"].format(video_key=cam, **pos),
                        np.concatenate([per_ep[e] for e in group]), eps.fps, codec)
            t = 0
            for e in group:  # timestamps of the episode inside its file
                rows[f"videos/{cam}/chunk_index"][e] = pos["chunk_index"]
                rows[f"videos/{cam}/file_index"][e] = pos["file_index"]
                rows[f"videos/{cam}/from_timestamp"][e] = t / eps.fps
                t += int(eps.lengths[e])
                rows[f"videos/{cam}/to_timestamp"][e] = t / eps.fps
    # Per-episode statistics as LeRobot's flat ``stats/<feature>/<stat>`` columns (numeric features).
    per_ep = [_episode_stats(eps, e, feats) for e in range(n)]
    for feat in [f for f in (per_ep[0] if n else []) if feats[f]["dtype"] not in ("image", "video")]:
        for stat in per_ep[0][feat]:
            rows[f"stats/{feat}/{stat}"] = [per_ep[e][feat][stat] for e in range(n)]
    (tmp / "meta/episodes/chunk-000").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(tmp / "meta/episodes/chunk-000/file-000.parquet")
    names = _task_names(eps)
    pd.DataFrame({"task_index": list(range(len(names)))},
                 index=pd.Index(names, name="task")).to_parquet(tmp / "meta/tasks.parquet")


def _stats(x: np.ndarray) -> dict:
    x = x.reshape(len(x), -1).astype(np.float64)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [len(x)]}


def _episode_stats(eps: EpisodeSet, e: int, feats: dict) -> dict:
    ep = eps.episode(e)
    return {_file_name(k): _stats(v) for k, v in ep.items()
            if _file_name(k) in feats and feats[_file_name(k)]["dtype"] != "video"}


def _global_stats(eps: EpisodeSet, feats: dict) -> dict:
    return {_file_name(k): _stats(v) for k, v in eps.fields.items()
            if _file_name(k) in feats and feats[_file_name(k)]["dtype"] != "video"}
