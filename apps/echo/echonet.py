"""EchoNet-Dynamic reader: ``Videos/*.avi`` (PyAV), ``FileList.csv``, ``VolumeTracings.csv``.

Masks are rasterised the way echonet/dynamic does it: drop the first (long-axis) row of a traced frame;
polygon x = ``[X1₂..X1ₙ, X2ₙ..X2₂]``, y = ``[Y1₂..Y1ₙ, Y2ₙ..Y2₂]``, rounded to integers, filled with
``skimage.draw.polygon(rows=y, cols=x, shape=(H, W))``. Frames are kept in CSV order of first appearance;
ED ("large") = last listed frame, ES ("small") = first; videos with < 2 traced frames are dropped. Several
tracings for one frame (echonet/dynamic#74) are split by frame and only the first block is kept (counted
in ``duplicates``). EchoNet has no pixel spacing: distances are in pixels, volumes relative.
"""

from __future__ import annotations

import csv
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class EchoNetError(ValueError):
    """Bad EchoNet input; the message names the file and the problem."""


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode an AVI to grey frames ``(N, H, W)`` uint8 (first channel of RGB, frames are grey)."""
    import av

    path = Path(path)
    if not path.exists():
        raise EchoNetError(f"{path}: video not found")
    if path.stat().st_size == 0:
        raise EchoNetError(f"{path}: empty video file")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24")[:, :, 0] for f in container.decode(video=0)]
    except Exception as err:  # PyAV raises InvalidDataError and friends
        raise EchoNetError(f"{path}: unreadable video ({type(err).__name__}: {err})") from err
    if not frames:
        raise EchoNetError(f"{path}: video has no decodable frames")
    return np.stack(frames)


@dataclass
class Tracing:
    """Rows of one traced frame: ``coords (R, 4)`` = X1, Y1, X2, Y2 (first row = long axis)."""

    frame: int
    coords: np.ndarray

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """EchoNet's rasterisation → ``(H, W)`` uint8, 1 inside the LV."""
        from skimage.draw import polygon

        x1, y1, x2, y2 = self.coords[1:].T
        x = np.rint(np.concatenate([x1, x2[::-1]])).astype(int)
        y = np.rint(np.concatenate([y1, y2[::-1]])).astype(int)
        rr, cc = polygon(y, x, shape)
        out = np.zeros(shape, dtype=np.uint8)
        out[rr, cc] = 1
        return out

    def long_axis(self) -> float:
        x1, y1, x2, y2 = self.coords[0]
        return float(np.hypot(x2 - x1, y2 - y1))

    def chords(self) -> np.ndarray:
        """Chord lengths ``(R−1,)`` in pixels."""
        x1, y1, x2, y2 = self.coords[1:].T
        return np.hypot(x2 - x1, y2 - y1)


@dataclass
class EchoNetVideo:
    name: str  # FileName without .avi
    path: Path
    split: str
    ef: float
    edv: float
    esv: float
    n_frames: int
    fps: float
    ed: Tracing
    es: Tracing


def read_filelist(root: Path) -> dict[str, dict]:
    path = root / "FileList.csv"
    if not path.exists():
        raise EchoNetError(f"{path}: FileList.csv missing")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    need = {"FileName", "EF", "ESV", "EDV", "NumberOfFrames", "Split"}
    if not rows or not need <= set(rows[0]):
        raise EchoNetError(f"{path}: needs columns {sorted(need)}")
    return {Path(r["FileName"]).stem if r["FileName"].endswith(".avi") else r["FileName"]: r for r in rows}


def read_tracings(root: Path) -> tuple[dict[str, "OrderedDict[int, np.ndarray]"], int]:
    """``{FileName: {frame: coords (R, 4)}}`` in CSV order, and the number of duplicate blocks dropped."""
    path = root / "VolumeTracings.csv"
    if not path.exists():
        raise EchoNetError(f"{path}: VolumeTracings.csv missing")
    out: dict[str, OrderedDict[int, list]] = {}
    closed: dict[str, set[int]] = {}
    last: tuple[str, int] | None = None
    duplicates = 0
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"FileName", "X1", "Y1", "X2", "Y2", "Frame"} <= set(reader.fieldnames):
            raise EchoNetError(f"{path}: header must be FileName, X1, Y1, X2, Y2, Frame")
        skipping = False
        for line_no, row in enumerate(reader, start=2):
            name = Path(row["FileName"]).stem
            try:
                frame = int(row["Frame"])
                coords = [float(row[k]) for k in ("X1", "Y1", "X2", "Y2")]
            except ValueError as err:
                raise EchoNetError(f"{path}: line {line_no}: bad number ({err})") from err
            key = (name, frame)
            if key != last:
                if last is not None:
                    closed.setdefault(last[0], set()).add(last[1])
                # A frame that reappears after another block is a second tracing (echonet/dynamic#74).
                skipping = frame in closed.get(name, set())
                duplicates += skipping
                last = key
            if not skipping:
                out.setdefault(name, OrderedDict()).setdefault(frame, []).append(coords)
    return {n: OrderedDict((f, np.asarray(c)) for f, c in fr.items()) for n, fr in out.items()}, duplicates


def scan(root: str | os.PathLike, split: str | None = None, check_frames: bool = True) -> list[EchoNetVideo]:
    """Videos with ≥ 2 traced frames (ED = last listed, ES = first listed), optionally one split.

    Args:
        check_frames: decode each video and raise when a tracing refers to a frame it does not have.
    """
    root = Path(root)
    files = read_filelist(root)
    tracings, _ = read_tracings(root)
    videos = []
    for name, frames in tracings.items():
        if len(frames) < 2 or name not in files:
            continue
        row = files[name]
        if split is not None and row["Split"].upper() != split.upper():
            continue
        path = root / "Videos" / f"{name}.avi"
        n_frames = int(float(row["NumberOfFrames"]))
        if check_frames:
            n_frames = read_video(path).shape[0]
        for f, c in frames.items():
            if not 0 <= f < n_frames:
                raise EchoNetError(f"{root / 'VolumeTracings.csv'}: {name}.avi traced frame {f} does not exist "
                                   f"(video {path.name} has {n_frames} frames)")
            if len(c) < 3:
                raise EchoNetError(f"{root / 'VolumeTracings.csv'}: {name}.avi frame {f} has {len(c)} rows, need ≥ 3")
        listed = list(frames)
        videos.append(EchoNetVideo(name, path, row["Split"].upper(), float(row["EF"]), float(row["EDV"]),
                                   float(row["ESV"]), n_frames, float(row.get("FPS", 50) or 50),
                                   ed=Tracing(listed[-1], frames[listed[-1]]), es=Tracing(listed[0], frames[listed[0]])))
    if not videos:
        raise EchoNetError(f"{root}: no video with ≥ 2 traced frames" + (f" in split {split}" if split else ""))
    return videos


def traced_frames(video: EchoNetVideo) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``[("ED", image (H, W), mask (H, W)), ("ES", ...)]`` decoded from the AVI."""
    frames = read_video(video.path)
    out = []
    for role, tr in (("ED", video.ed), ("ES", video.es)):
        if tr.frame >= len(frames):
            raise EchoNetError(f"{video.path}: traced frame {tr.frame} does not exist ({len(frames)} frames)")
        image = frames[tr.frame]
        out.append((role, image, tr.mask(image.shape)))
    return out


def disks_volume(tracing: Tracing) -> float:
    """Single-plane method of disks from a tracing, in pixel³: ``Σ (π/4)·d_i²·L/N``."""
    from apps.echo.metrics import disks_volume as _disks

    return _disks(tracing.chords(), tracing.long_axis())
