"""A small safetensors reader and writer (numpy + json + mmap), so HF checkpoints need no extra
dependency (the `safetensors` package is not one of ours).

The format: an 8-byte little-endian header length n, n bytes of JSON mapping each tensor name to
`{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the data that follows the
header) plus an optional `"__metadata__"` dict of strings, then the raw little-endian tensor
bytes. Reading maps the file and hands out views; every header entry is validated against the
file size first, so a truncated file is reported as such before any tensor is touched.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import ml_dtypes
import numpy as np

from convert.errors import CorruptCheckpointError, DtypeError

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dtype: code for code, dtype in DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # real headers are kilobytes; a huge length means a corrupt file
_ALIGN = 8  # header padded with spaces so tensor data starts 8-byte aligned


class SafetensorsFile:
    """One opened `.safetensors` file: names, shapes and dtypes from the header, data as views."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        size = self.path.stat().st_size
        if size == 0:
            raise CorruptCheckpointError(f"{path}: empty file")
        if size < 8:
            raise CorruptCheckpointError(f"{path}: truncated ({size} bytes, no header length)")
        with open(self.path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size - 8, _MAX_HEADER):
                raise CorruptCheckpointError(
                    f"{path}: header length {n} does not fit a {size}-byte file "
                    "(truncated, or not safetensors)"
                )
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CorruptCheckpointError(f"{path}: unreadable safetensors header: {e}") from e
            if not isinstance(header, dict):
                raise CorruptCheckpointError(f"{path}: safetensors header is not a JSON object")
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self._entries = {k: self._validate(k, v, size - 8 - n) for k, v in header.items()}
            self._start = 8 + n
            # An empty data section cannot be mapped; it holds nothing to read anyway.
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self._entries else None

    def _validate(self, key: str, entry: object, data_size: int) -> tuple[np.dtype, tuple, int]:
        """(dtype, shape, byte offset into the data) after checking the entry fits the file."""
        try:
            code, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            shape = tuple(int(d) for d in shape)
        except (TypeError, KeyError, ValueError) as e:
            raise CorruptCheckpointError(f"{self.path}: bad header entry {key}: {entry!r}") from e
        if code not in DTYPES:
            raise DtypeError(f"{self.path}: {key} has unsupported dtype {code}")
        dtype = DTYPES[code]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != nbytes or begin < 0:
            raise CorruptCheckpointError(
                f"{self.path}: {key} spans bytes [{begin}, {end}) but shape {list(shape)} {code} "
                f"needs {nbytes}"
            )
        if end > data_size:
            raise CorruptCheckpointError(
                f"{self.path}: truncated: {key} ends at data byte {end}, the file holds {data_size}"
            )
        return dtype, shape, begin

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> np.dtype:
        return self._entries[key][0]

    def array(self, key: str) -> np.ndarray:
        """A read-only view of the mapped bytes."""
        dtype, shape, begin = self._entries[key]
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return np.empty(shape, dtype)
        return np.frombuffer(self._map, dtype, count, self._start + begin).reshape(shape)


class LazyTensor(Protocol):
    """What the writer needs of a tensor before its bytes exist."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def make(self) -> np.ndarray: ...


def _header(tensors: Sequence[LazyTensor], metadata: dict[str, str] | None = None) -> bytes:
    """The length prefix and padded JSON header for tensors laid out in the given order."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for t in tensors:
        if t.dtype not in _CODES:
            raise DtypeError(f"{t.name}: dtype {t.dtype} cannot be stored in safetensors")
        nbytes = int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize
        header[t.name] = {
            "dtype": _CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % _ALIGN)
    return struct.pack("<Q", len(text)) + text


def write(
    path: str | os.PathLike,
    tensors: Iterable[LazyTensor],
    metadata: dict[str, str] | None = None,
) -> int:
    """Writes tensors one at a time (only one is ever materialised); returns the data bytes."""
    tensors = list(tensors)
    total = 0
    with open(path, "wb") as f:
        f.write(_header(tensors, metadata))
        for t in tensors:
            array = np.ascontiguousarray(t.make())
            if array.shape != tuple(t.shape) or array.dtype != t.dtype:
                raise ValueError(
                    f"{t.name}: produced {array.dtype}{list(array.shape)}, "
                    f"planned {t.dtype}{list(t.shape)}"
                )
            f.write(array.reshape(-1).view(np.uint8).data)
            total += array.nbytes
    return total
