"""Format detection, one `load_episodes` entry point, and the `convert` verb between formats."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from apps.robotics.data.episodes import DataError, EpisodeSet, data_error
from dualsci.argtypes import positive_int
from dualsci.io import blocking_file

FORMATS = ("zarr", "lerobot_v2.1", "lerobot_v3", "robomimic")


def detect_format(path: str | os.PathLike) -> str:
    """Guess the dataset format of `path` from its layout (not its name alone)."""
    path = Path(path)
    if not path.exists():
        raise data_error(str(path), "file not found")
    if path.is_dir() and (path / "meta" / "info.json").exists():
        from apps.robotics.data.lerobot import load_info_json

        v = load_info_json(path / "meta" / "info.json").get("codebase_version", "")
        return "lerobot_v3" if str(v).startswith("v3") else "lerobot_v2.1"
    if path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists()):
        return "zarr"
    if path.suffix == ".zip":
        return "zarr"
    if path.is_file():
        with open(path, "rb") as fh:
            if fh.read(8) == b"\x89HDF\r\n\x1a\n":
                return "robomimic"
    raise data_error(str(path), f"unrecognised dataset layout (expected one of {', '.join(FORMATS)})")


def load_episodes(path: str | os.PathLike, fmt: str | None = None, **kw) -> EpisodeSet:
    """Read any supported dataset into an `EpisodeSet` (format auto-detected when `fmt` is None)."""
    fmt = fmt or detect_format(path)
    if fmt == "zarr":
        from apps.robotics.data.zarr_io import read_replay_zarr

        return read_replay_zarr(path, **kw)
    if fmt.startswith("lerobot"):
        from apps.robotics.data.lerobot import read_lerobot

        return read_lerobot(path, **kw)
    if fmt == "robomimic":
        from apps.robotics.data.robomimic import read_robomimic

        return read_robomimic(path, **kw)
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")


def load_first_episodes(path: str | os.PathLike, fmt: str | None = None, n: int | None = None,
                        **kw) -> EpisodeSet:
    """Read the first `n` episodes of a dataset (all of them when it has fewer, or `n` is None).

    Zarr and LeRobot read only those episodes' frames; robomimic reads the file, then keeps them.
    """
    fmt = fmt or detect_format(path)
    if n is None:
        return load_episodes(path, fmt, **kw)
    if fmt == "zarr":
        from apps.robotics.data.zarr_io import count_replay_episodes

        return load_episodes(path, fmt, episodes=list(range(min(n, count_replay_episodes(path)))), **kw)
    if fmt.startswith("lerobot"):
        from apps.robotics.data.lerobot import lerobot_episode_ids

        return load_episodes(path, fmt, episodes=lerobot_episode_ids(path)[:n], **kw)
    eps = load_episodes(path, fmt, **kw)
    return eps.select(range(min(n, eps.n_episodes)))


def save_episodes(eps: EpisodeSet, path: str | os.PathLike, fmt: str, overwrite: bool = False, **v3) -> Path:
    """Write `eps` in format `fmt` (one of `FORMATS`), atomically.

    ``v3``: ``data_files_size_in_mb``, ``video_files_size_in_mb``, ``chunks_size`` for ``lerobot_v3``."""
    if fmt == "zarr":
        from apps.robotics.data.zarr_io import write_replay_zarr

        return write_replay_zarr(eps, path, overwrite=overwrite)
    if fmt in ("lerobot_v2.1", "lerobot_v3"):
        from apps.robotics.data.lerobot import write_lerobot

        if fmt.endswith("2.1"):
            return write_lerobot(eps, path, version="v2.1", overwrite=overwrite)
        return write_lerobot(eps, path, version="v3.0", overwrite=overwrite, **v3)
    if fmt == "robomimic":
        from apps.robotics.data.robomimic import write_robomimic

        return write_robomimic(eps, path, overwrite=overwrite)
    raise ValueError(f"--to must be one of {', '.join(FORMATS)}, got {fmt!r}")


def check_destination(dst: str | os.PathLike) -> None:
    """ValueError when a folder above `dst` is a file (the writers' own error only said "File exists")."""
    blocker = blocking_file(Path(dst).absolute())
    if blocker is not None:
        raise ValueError(f"{dst}: cannot write there, {blocker} is a file, not a folder")


def convert_main(argv: list[str] | None = None) -> int:
    """Convert demonstrations between zarr, LeRobot v2.1/v3 and robomimic HDF5 (SRC DST --to FORMAT)."""
    ap = argparse.ArgumentParser(prog="dualsci-robotics convert",
                                 description="Convert demonstrations between zarr, LeRobot v2.1/v3 and robomimic HDF5.")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--to", required=True, choices=FORMATS)
    ap.add_argument("--from", dest="src_fmt", choices=FORMATS, default=None)
    ap.add_argument("--episodes", type=positive_int, default=None,
                    help="convert only the first N episodes (all when the file has fewer)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--data-mb", type=float, default=100.0, help="lerobot_v3: data file size limit (MB)")
    ap.add_argument("--video-mb", type=float, default=200.0, help="lerobot_v3: video file size limit (MB)")
    ap.add_argument("--chunks-size", type=int, default=1000, help="lerobot_v3: files per chunk folder")
    args = ap.parse_args(argv)
    try:
        check_destination(args.dst)
        eps = load_first_episodes(args.src, args.src_fmt, args.episodes)
        eps.validate()
        v3 = dict(data_files_size_in_mb=args.data_mb, video_files_size_in_mb=args.video_mb,
                  chunks_size=args.chunks_size) if args.to == "lerobot_v3" else {}
        save_episodes(eps, args.dst, args.to, overwrite=args.overwrite, **v3)
    except (DataError, OSError, ValueError) as exc:  # OSError: existing output, unreadable or full disk (named)
        print(f"error: {exc}")
        return 2
    print(f"wrote {args.dst} ({args.to}): {eps.n_episodes} episodes, {eps.n_frames} frames, "
          f"fields {sorted(eps.fields)}")
    return 0
