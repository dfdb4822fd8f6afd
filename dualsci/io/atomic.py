"""Atomic outputs: a reader never sees a half-written file or folder.

Everything is written under a temporary sibling name and renamed into place at the end
(``os.replace`` is atomic within one filesystem), so a killed job leaves either the old result or
nothing, never a partial one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


def is_atomic_temporary(path: str | os.PathLike) -> bool:
    """True for a file named like the temporaries of :func:`atomic_write` (``.<name>.<random>.tmp``), which
    a job killed in the middle of a write leaves behind."""
    path = Path(path)
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode a plain open() would have.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; it becomes ``path`` when the block succeeds.

    Raises ``FileExistsError`` naming ``path`` if it exists and ``overwrite`` is False, or if it is a
    file (a folder never replaces a file, even with ``overwrite``), and ``NotADirectoryError`` naming
    the file when a parent of ``path`` is a file.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: is a file, not an output folder (refusing to replace it)")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output folder already exists (refusing to overwrite)")
    blocker = blocking_file(path)
    if blocker is not None:
        raise NotADirectoryError(f"{path}: cannot create the output folder, {blocker} is a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes it private (0700)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _nearest_existing_parent(path: Path) -> Path | None:
    # ``Path.exists`` is False for anything under a file, so the first existing parent is the one to test
    return next((p for p in path.parents if p.exists()), None)


def blocking_file(path: str | os.PathLike) -> Path | None:
    """The file among ``path``'s parents that stops ``path`` from being created (``mkdir`` would raise a
    bare ``NotADirectoryError``), or None."""
    parent = _nearest_existing_parent(Path(path))
    return parent if parent is not None and not parent.is_dir() else None


def output_dir_problem(path: str | os.PathLike, option: str = "--out") -> str | None:
    """Why ``path`` cannot be (or become) an output folder, as ``"<path>: <option> <problem>"``; None if
    it can (an existing folder can). Meant for a check before any work, instead of a raw OS error when
    the results are finally written: ``path`` is a file, a file sits above it, or the nearest existing
    folder above it is not writable."""
    path = Path(path)
    if path.exists():
        return None if path.is_dir() else f"{path}: {option} exists and is not a folder"
    above = _nearest_existing_parent(path)
    if above is not None and not above.is_dir():
        return f"{path}: {option} cannot be created: {above} is a file, not a folder"
    if above is not None and not os.access(above, os.W_OK | os.X_OK):
        return f"{path}: {option} cannot be created: {above} is not writable"
    return None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically.

    numpy scalars/arrays and paths are converted; NaN and ±inf become ``null`` (Python's ``NaN`` and
    ``Infinity`` tokens are not JSON: jq, JavaScript and most other parsers refuse the whole file).
    """
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(_strict(obj), handle, indent=indent, sort_keys=False, allow_nan=False)
        handle.write("\n")


def _strict(value: Any) -> Any:
    """``value`` with numpy values and paths as plain Python, and non-finite floats as None."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return _strict(_json_default(value))


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, paths: the common non-JSON values in results.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
