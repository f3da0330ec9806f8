"""Arrays as standard ``.npy`` bytes, written and read without extra copies, hashed on the way.

``np.save`` into a zip member copies the array in 16 MB pieces and ``np.load`` from one reads it
into temporary bytes; for a 1 GB model both double the memory traffic of a save or a restore.
Here the array's own buffer is written, and a restore reads straight into the new array, with
the sha256 computed over exactly the bytes that moved. Object arrays are never read (that
would unpickle data from a file).

The ``.npy`` header can only name numpy's own dtypes. The ones Keras adds through ``ml_dtypes``
(bfloat16, the float8 types, int4) come out of ``np.save`` as raw bytes (``<V2``) that nothing
can cast back, or as a descriptor numpy cannot read (``<f1`` for float8_e5m2). Such an array is
written as unsigned integers of its width, and its dtype travels by name next to it (the
checkpoint's manifest), so that reading it back is a view, not a conversion.
"""

from __future__ import annotations

import hashlib
import io
from typing import BinaryIO

import numpy as np

from colabkit.storage.base import CHUNK


def dtype_name(dtype: np.dtype) -> str | None:
    """The name under which an ``ml_dtypes`` dtype is stored; None for numpy's own dtypes.

    Raises:
        TypeError: a dtype that neither the ``.npy`` header nor a name can carry (structured,
            void, object, or an extension type unknown to ``ml_dtypes``).
    """
    dtype = np.dtype(dtype)
    if dtype.isbuiltin == 1 and dtype.kind in "biufc":
        return None
    try:
        if dtype_from_name(dtype.name) == dtype:
            return dtype.name
    except TypeError:
        pass
    raise TypeError(f"dtype {dtype} ({dtype.name}) cannot be stored in a checkpoint")


def dtype_from_name(name: str) -> np.dtype:
    """The dtype stored as ``name``: one of ``ml_dtypes`` (bfloat16, float8_*, int4, ...)."""
    import ml_dtypes  # a dependency of keras; only needed for the dtypes it defines

    kind = getattr(ml_dtypes, name, None) if isinstance(name, str) else None
    try:
        dtype = np.dtype(kind) if isinstance(kind, type) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.name != name:
        raise TypeError(
            f"dtype {name!r} is not one this ml_dtypes ({ml_dtypes.__version__}) knows: upgrade "
            "ml_dtypes (it comes with keras) to read this checkpoint"
        )
    return dtype


def encode(array: np.ndarray) -> tuple[bytes, np.ndarray, str | None]:
    """The ``.npy`` header, the data as a flat uint8 view (a copy only if not C-contiguous) and
    the dtype's name where the header cannot carry it (see :func:`dtype_name`).

    Raises:
        TypeError: as :func:`dtype_name`.
    """
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    name = dtype_name(array.dtype)
    stored = np.dtype(f"u{array.dtype.itemsize}") if name is not None else array.dtype
    header = {
        "descr": np.lib.format.dtype_to_descr(stored),
        "fortran_order": False,
        "shape": array.shape,
    }
    buffer = io.BytesIO()
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # header over 64 KiB (huge structured dtypes)
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue(), array.reshape(-1).view(np.uint8), name


class HashingReader:
    """Reads a binary stream while computing the sha256 and size of everything read."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._digest.update(data)
        self.size += len(data)
        return data

    def readinto(self, target: np.ndarray) -> int:
        data = self.read(target.nbytes)
        target[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        return len(data)

    def drain(self) -> None:
        """Reads (and hashes) whatever is left, so that trailing bytes count too."""
        while self.read(CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def decode(reader: HashingReader, member: str, limit: int) -> np.ndarray:
    """Reads one ``.npy`` array from ``reader`` into a new, writable array.

    Args:
        reader: Positioned at the start of the ``.npy`` bytes.
        member: Its name, for error messages.
        limit: The member's size: a header that claims more data than that is refused before
            any memory is allocated for it.

    Raises:
        ValueError: not a ``.npy``, an object array, or fewer bytes than the header promises.
    """
    version = np.lib.format.read_magic(reader)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(reader)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(reader)
    else:
        raise ValueError(f"{member}: unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError(f"{member}: object arrays are never loaded")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize > limit:
        raise ValueError(f"{member}: header promises more bytes than the member holds")
    array = np.empty(shape[::-1] if fortran_order else shape, dtype=dtype)
    flat = array.reshape(-1).view(np.uint8)
    for start in range(0, flat.nbytes, CHUNK):
        piece = flat[start : start + CHUNK]
        if reader.readinto(piece) != piece.nbytes:
            raise ValueError(f"{member}: truncated array data")
    return array.T if fortran_order else array
