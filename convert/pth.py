"""RWKV-7 `.pth` files (a `torch.save`d flat state dict) in and out, in any naming of
`convert.keymap` (BlinkDL's is the official one).

Reading never unpickles arbitrary objects: `torch.load(weights_only=True)` admits only tensors
and plain containers, so a pickle that would run code is refused as unsafe. `mmap=True` leaves
the tensor bytes in the file until each one is copied. torch is imported lazily: it is needed
for this format only.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from convert.assemble import OnTensor, SourceMeta, plan_tensors, read_params
from convert.errors import (
    CorruptCheckpointError,
    DtypeError,
    UnsafeCheckpointError,
    UnsupportedFormatError,
)
from convert.keymap import Naming
from rwkv_jax.atomic import make_dirs
from rwkv_jax.config import Config
from rwkv_jax.params import Params

if TYPE_CHECKING:
    import torch

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since torch 1.6


# Bytes per element of the storage types torch.save names in its pickle.
_ITEMSIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
             "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
             "UntypedStorage": 1}


class _Storage:
    """A storage as the pickle declares it: its zip record and size in bytes."""

    def __init__(self, key: str, nbytes: int | None):
        self.key, self.nbytes = key, nbytes


class _Call(dict):
    """Stands in for every global the pickle names, so reading it runs no code: records the call's
    arguments, and takes dict items (the state dict itself) and state."""

    def __init__(self, *args: object, **_: object):
        super().__init__()
        self.args = args

    def __setstate__(self, _: object) -> None:
        pass


class _StorageReader(pickle.Unpickler):
    """The pickle of a `.pth` read for its storage declarations only (no object is built)."""

    def find_class(self, module: str, name: str) -> object:
        if module == "torch" and name.endswith("Storage"):
            return name
        return _Call

    def persistent_load(self, pid: object) -> _Storage:
        _, kind, key, _, numel = pid  # ("storage", storage type, record key, location, element count)
        itemsize = _ITEMSIZE.get(kind) if isinstance(kind, str) else None
        return _Storage(str(key), numel * itemsize if itemsize and isinstance(numel, int) else None)


def _storage_of(value: object, depth: int = 0) -> _Storage | None:
    if isinstance(value, _Storage):
        return value
    if isinstance(value, _Call) and depth < 4:
        return next((s for a in value.args if (s := _storage_of(a, depth + 1))), None)
    return None


def _check_records(path: Path, names: list[str]) -> None:
    """Every tensor's zip record holds as many bytes as its pickle declares: torch's memory-mapped
    load does not check, and reads a short record's missing bytes from whatever follows it."""
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        root = pkl[: -len("data.pkl")]
        state = _StorageReader(archive.open(pkl)).load()
        sizes = {i.filename: i.file_size for i in archive.infolist()}
    for name in names:
        storage = _storage_of(state.get(name)) if isinstance(state, dict) else None
        if storage is None or storage.nbytes is None:
            continue
        record = f"{root}data/{storage.key}"
        if sizes.get(record) != storage.nbytes:
            held = "is missing" if record not in sizes else f"holds {sizes[record]} bytes"
            raise CorruptCheckpointError(
                f"{path}: {name}: zip record {record} {held}, but the pickle declares a storage of "
                f"{storage.nbytes} bytes (a damaged or hand-edited archive)"
            )


def torch_load(path: Path) -> object:
    """A `torch.save`d file of tensors and plain containers, loaded memory-mapped with
    `weights_only=True`; anything else (an empty, foreign, truncated or code-running file) is
    refused naming the file."""
    import torch

    size = path.stat().st_size  # FileNotFoundError for a missing file, as open() would
    if size == 0:
        raise CorruptCheckpointError(f"{path}: empty file")
    with open(path, "rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            raise CorruptCheckpointError(f"{path}: not a torch zip archive (other format, corrupt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            # torch's message also advises retrying with weights_only=False: never for this file
            what = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "")
            raise UnsafeCheckpointError(
                f"{path}: the pickle asks for objects other than tensors and was not loaded; a "
                f"checkpoint holds only tensors, so do not load this file at all{': ' + what if what else ''}"
            ) from None
        raise CorruptCheckpointError(f"{path}: corrupt pickle: {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CorruptCheckpointError(f"{path}: truncated or corrupt torch archive: {e}") from e


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    state = torch_load(path)
    if not isinstance(state, dict):
        raise UnsupportedFormatError(f"{path}: expected a state dict, got {type(state).__name__}")
    nested = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if nested:  # e.g. a training checkpoint with a "state_dict" entry
        raise UnsupportedFormatError(
            f"{path}: expected a flat state dict {{name: tensor}}; not tensors: {nested[:5]}"
        )
    _check_records(path, list(state))
    return state


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype:
    import torch

    if tensor.dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(torch.empty(0, dtype=tensor.dtype).numpy().dtype)
    except TypeError as e:
        raise DtypeError(f"torch dtype {tensor.dtype} has no numpy equivalent") from e


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A view of the tensor's bytes (no copy); bf16 goes through int16, which numpy knows."""
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def to_torch(array: np.ndarray) -> torch.Tensor:
    import torch

    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class PthSource:
    """An opened `.pth`: shapes and dtypes from the tensor headers, data through the mmap."""

    def __init__(self, path: str | os.PathLike):
        self.label = str(path)
        self._state = _load_state_dict(Path(path))

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def dtype(self, key: str) -> np.dtype:
        try:
            return _numpy_dtype(self._state[key])
        except DtypeError as e:
            raise DtypeError(f"{self.label}: {key}: {e}") from e

    def array(self, key: str) -> np.ndarray:
        return to_numpy(self._state[key])


def torch_save(obj: object, path: Path) -> Path:
    """`torch.save` that leaves `path` complete or untouched: written beside it, then renamed."""
    import torch

    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save(obj, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.absolute()


def read_pth(
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    on_tensor: OnTensor | None = None,
) -> tuple[Params, Config, SourceMeta]:
    """Params (jax CPU arrays in the file's dtype unless `dtype`), the inferred Config, meta."""
    return read_params(PthSource(path), "pth", dtype=dtype, on_tensor=on_tensor)


def write_pth(
    params: Params,
    path: str | os.PathLike,
    *,
    naming: Naming = "blink",
    dtype: Any = None,
    layer0_v: bool = True,
    on_tensor: OnTensor | None = None,
) -> None:
    """Writes a `.pth` with the tensors in `naming`; BlinkDL names (the default) are the official
    format, loadable by the `rwkv` package with `RWKV_V7_ON=1`.

    `layer0_v=False` leaves out layer 0's unused v0/v1/v2, as some released files do. The file
    appears only once complete.
    """

    path = Path(path)
    if path.suffix != ".pth":  # the official loader appends ".pth" to the name it is given
        raise UnsupportedFormatError(f"{path}: an official checkpoint file name ends in .pth")
    planned = plan_tensors(params, naming, dtype=dtype, layer0_v=layer0_v, on_tensor=on_tensor)
    make_dirs(path.parent)
    torch_save({p.name: to_torch(p.make()) for p in planned}, path)
