"""MetaImage (``.mhd`` + ``.raw``) reading and writing, the format of the CAMUS 2019 release.

Only what CAMUS uses: 2-D images and 3-D (frame) stacks, uncompressed or zlib-compressed, little or
big endian. Arrays follow SimpleITK's ``GetArrayFromImage`` order: ``([N,] H, W)``; spacing is
returned in the same order, ``([dz,] dy, dx)`` in mm, while the header stores ``dx dy [dz]``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from dualsci.io import atomic_write

_TYPES = {
    "MET_UCHAR": np.uint8,
    "MET_CHAR": np.int8,
    "MET_USHORT": np.uint16,
    "MET_SHORT": np.int16,
    "MET_UINT": np.uint32,
    "MET_INT": np.int32,
    "MET_FLOAT": np.float32,
    "MET_DOUBLE": np.float64,
}
_NAMES = {np.dtype(v): k for k, v in _TYPES.items()}


class MetaImageError(ValueError):
    """A ``.mhd``/``.raw`` pair that cannot be read; the message names the file and the problem."""


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """Parse ``Key = Value`` lines of a ``.mhd`` header."""
    path = Path(path)
    if not path.exists():
        raise MetaImageError(f"{path}: file not found")
    header: dict[str, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            header[key.strip()] = value.strip()
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in header:
            raise MetaImageError(f"{path}: MetaImage header lacks {key}")
    return header


def read_mhd(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a MetaImage.

    Returns:
        array: ``([N,] H, W)``; spacing: ``([dz,] dy, dx)`` in mm.
    """
    path = Path(path)
    header = read_header(path)
    dims = [int(v) for v in header["DimSize"].split()]
    ndims = int(header["NDims"])
    if len(dims) != ndims:
        raise MetaImageError(f"{path}: DimSize {dims} does not have NDims={ndims} entries")
    etype = header["ElementType"]
    if etype not in _TYPES:
        raise MetaImageError(f"{path}: unsupported ElementType {etype!r} (allowed: {sorted(_TYPES)})")
    dtype = np.dtype(_TYPES[etype])
    msb = header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true"
    dtype = dtype.newbyteorder(">" if msb else "<")
    spacing = [float(v) for v in header.get("ElementSpacing", " ".join(["1"] * ndims)).split()]
    data_name = header["ElementDataFile"]
    if data_name == "LOCAL":
        raise MetaImageError(f"{path}: embedded (LOCAL) data is not supported; CAMUS uses a separate .raw")
    raw = path.parent / data_name
    if not raw.exists():
        raise MetaImageError(f"{path}: data file {raw.name} not found next to the header")
    payload = raw.read_bytes()
    if header.get("CompressedData", "False").lower() == "true":
        try:
            payload = zlib.decompress(payload)
        except zlib.error as err:
            raise MetaImageError(f"{raw}: corrupt zlib payload ({err})") from err
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(payload) != expected:
        raise MetaImageError(
            f"{raw}: has {len(payload)} bytes, header {path.name} needs {expected} "
            f"(DimSize {dims}, {etype})"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(dims[::-1]).astype(dtype.newbyteorder("="))
    return array, tuple(spacing[::-1])


def write_mhd(path: str | os.PathLike, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    """Write ``array`` (``([N,] H, W)``) with ``spacing`` (``([dz,] dy, dx)``) as ``path`` + ``.raw``."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    if array.dtype not in _NAMES:
        raise MetaImageError(f"{path}: cannot store dtype {array.dtype}")
    if len(spacing) != array.ndim:
        raise MetaImageError(f"{path}: spacing {spacing} does not match array of {array.ndim} dims")
    raw = path.with_suffix(".raw")
    ndim = array.ndim
    identity = " ".join("1" if i == j else "0" for i in range(ndim) for j in range(ndim))
    lines = [
        "ObjectType = Image",
        f"NDims = {ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        f"TransformMatrix = {identity}",
        "Offset = " + " ".join(["0"] * ndim),
        "CenterOfRotation = " + " ".join(["0"] * ndim),
        "AnatomicalOrientation = " + ("RAI"[:ndim]),
        "ElementSpacing = " + " ".join(f"{s:.6g}" for s in spacing[::-1]),
        "DimSize = " + " ".join(str(d) for d in array.shape[::-1]),
        f"ElementType = {_NAMES[array.dtype]}",
        f"ElementDataFile = {raw.name}",
    ]
    with atomic_write(raw) as handle:
        handle.write(array.astype(array.dtype.newbyteorder("<")).tobytes())
    with atomic_write(path, "w", encoding="latin-1") as handle:
        handle.write("\n".join(lines) + "\n")
