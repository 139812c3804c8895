"""Read and write IDX files, the format of MNIST, with numpy only.

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT``: the element type,
``NN``: the number of dimensions), then ``NN`` big-endian ``uint32`` sizes, then
the elements in row-major order, big endian. MNIST uses type ``0x08``
(unsigned byte): ``0x00000803`` for the images (count x rows x columns) and
``0x00000801`` for the labels. Files may be gzip-compressed; compression is
recognised from the content, not the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike, NDArray

__all__ = ["IDX_DTYPES", "parse_idx", "read_idx", "write_idx"]

#: IDX element-type codes and the (big-endian) numpy types they denote.
IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(
    data: bytes,
    *,
    source: str = "<bytes>",
    dtype: DTypeLike | None = None,
    ndim: int | None = None,
) -> NDArray[np.generic]:
    """Decode the bytes of an (uncompressed) IDX file.

    Args:
        data: The whole file content.
        source: Name used in error messages (usually the file's path).
        dtype: If given, the element type the header must declare (for example
            ``np.uint8`` for MNIST).
        ndim: If given, the number of dimensions the header must declare.

    Returns:
        A new, writable, native-byte-order array of the shape in the header.

    Raises:
        ValueError: naming ``source``, if the magic number is wrong (non-zero first
            bytes, unknown type code, zero dimensions), if the header declares
            another type or rank than ``dtype``/``ndim``, or if the file size does
            not match the header (a truncated or padded file).
    """
    if len(data) < 4:
        raise ValueError(
            f"{source}: not an IDX file: only {len(data)} bytes, "
            "shorter than the 4-byte magic number (truncated or empty file?)"
        )
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{source}: bad IDX magic number 0x{magic:08x}: the first two bytes must be zero "
            "(not an IDX file, or corrupt)"
        )
    code, rank = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise ValueError(
            f"{source}: bad IDX magic number 0x{magic:08x}: unknown element type 0x{code:02x} "
            f"(known: {known})"
        )
    if rank == 0:
        raise ValueError(f"{source}: bad IDX magic number 0x{magic:08x}: zero dimensions")
    file_dtype = IDX_DTYPES[code]
    if dtype is not None and file_dtype.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
        raise ValueError(
            f"{source}: IDX element type 0x{code:02x} ({file_dtype.newbyteorder('=')}) "
            f"where {np.dtype(dtype)} was expected (magic number 0x{magic:08x})"
        )
    if ndim is not None and rank != ndim:
        raise ValueError(
            f"{source}: IDX file has {rank} dimensions where {ndim} were expected "
            f"(magic number 0x{magic:08x})"
        )
    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(
            f"{source}: truncated IDX header: {len(data)} bytes, the {rank} dimension sizes "
            f"need {header}"
        )
    shape = struct.unpack(f">{rank}I", data[4:header])
    count = math.prod(shape)
    expected = header + count * file_dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{source}: IDX size mismatch ({what}): the header declares shape {shape} of "
            f"{file_dtype.newbyteorder('=')}, {expected} bytes in all, but the file has "
            f"{len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=file_dtype, count=count, offset=header).reshape(shape)
    return array.astype(file_dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed if it is gzip.

    Raises:
        ValueError: naming the file, if it looks like gzip but does not decompress.
    """
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip file: {exc}") from None


def read_idx(
    path: str | os.PathLike[str],
    *,
    dtype: DTypeLike | None = None,
    ndim: int | None = None,
) -> NDArray[np.generic]:
    """Read an IDX file, raw or gzip-compressed.

    Args:
        path: The file. Gzip compression is detected from its first bytes.
        dtype: If given, the element type the header must declare.
        ndim: If given, the number of dimensions the header must declare.

    Returns:
        A new, writable array in native byte order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: naming the file, if it is corrupt: bad gzip stream, wrong magic
            number, unexpected type or rank, or a size that does not match the header.
    """
    file = Path(path)
    return parse_idx(_read_bytes(file), source=str(file), dtype=dtype, ndim=ndim)


def write_idx(
    path: str | os.PathLike[str],
    array: NDArray[np.generic],
    *,
    compress: bool | None = None,
) -> Path:
    """Write ``array`` as an IDX file.

    Args:
        path: The destination (overwritten).
        array: An array of ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or
            ``float64``, with 1 to 255 dimensions, each smaller than ``2**32``.
        compress: Gzip the file; by default, when ``path`` ends with ``.gz``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if the array's type has no IDX code or its shape does not fit.
    """
    values = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = values.dtype.newbyteorder("=")
    if native not in codes:
        accepted = ", ".join(str(dt) for dt in codes)
        raise ValueError(f"array dtype must be one of {accepted} for IDX, got {values.dtype}")
    if not 1 <= values.ndim <= 255 or any(n >= 2**32 for n in values.shape):
        raise ValueError(f"array shape {values.shape} does not fit an IDX header")
    code = codes[native]
    header = bytes([0, 0, code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    body = np.ascontiguousarray(values, dtype=IDX_DTYPES[code]).tobytes()
    file = Path(path)
    if compress is None:
        compress = file.name.endswith(".gz")
    content = header + body
    file.write_bytes(gzip.compress(content, mtime=0) if compress else content)
    return file
