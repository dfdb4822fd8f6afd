"""MP4 encode/decode with PyAV (no ffmpeg binary needed): LeRobot videos and rollout videos."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from apps.robotics.data.episodes import data_error


def _prepare(path, frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be (T, H, W, 3), got {frames.shape}")
    frames = frames.astype(np.uint8)
    h, w = frames.shape[1:3]
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def _encode(fh, frames: np.ndarray, fps: float, codec: str, crf: int) -> None:
    """Encode prepared ``(T, H, W, 3)`` uint8 frames as mp4 into the binary file object `fh`."""
    import av

    with av.open(fh, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "libsvtav1"):
            stream.options = {"crf": str(crf)}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0, codec: str = "libx264",
                crf: int = 18) -> Path:
    """Encode `frames` `(T, H, W, 3)` uint8 to `path` (written atomically).

    H and W are padded to even sizes for yuv420p codecs (PushT's 96x96 needs none).
    """
    from dualsci.io import atomic_write

    frames = _prepare(path, frames)
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        _encode(fh, frames, fps, codec, crf)
    return path


def encoded_size(frames: np.ndarray, fps: float = 10.0, codec: str = "libx264", crf: int = 18) -> int:
    """Bytes that `write_video` would write for `frames` (encoded in memory; used to plan file splits)."""
    from io import BytesIO

    buf = BytesIO()
    _encode(buf, _prepare("<memory>", frames), fps, codec, crf)
    return buf.getbuffer().nbytes


def read_video(path: str | os.PathLike, fps: float | None = None) -> np.ndarray:
    """Decode every frame of `path` to `(T, H, W, 3)` uint8, frame k at time k/fps.

    When `fps` is given, frames are placed by presentation time (robust to B-frame reordering);
    missing slots (dropped frames) repeat the previous frame.
    """
    import av

    path = Path(path)
    if not path.exists():
        raise data_error(str(path), "video file not found")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            out = []
            for frame in container.decode(stream):
                out.append((frame.time, frame.to_ndarray(format="rgb24")))
    except av.error.FFmpegError as exc:
        raise data_error(str(path), f"cannot decode video ({exc})") from exc
    if not out:
        raise data_error(str(path), "video has no frames")
    out.sort(key=lambda p: (p[0] if p[0] is not None else 0.0))
    if fps is None:
        return np.stack([f for _, f in out])
    n = int(round((out[-1][0] or 0.0) * fps)) + 1
    frames = np.zeros((n,) + out[0][1].shape, np.uint8)
    filled = np.zeros(n, bool)
    for t, f in out:
        k = int(round((t or 0.0) * fps))
        if 0 <= k < n:
            frames[k], filled[k] = f, True
    for k in range(1, n):
        if not filled[k]:
            frames[k] = frames[k - 1]
    return frames
