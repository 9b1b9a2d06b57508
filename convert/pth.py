"""Official RWKV-7 `.pth` files (a `torch.save`d flat state dict) in and out.

Reading never unpickles arbitrary objects: `torch.load(weights_only=True)` admits only tensors
and plain containers, so a pickle that would run code is refused as unsafe. `mmap=True` leaves
the tensor bytes in the file until each one is copied. torch is imported lazily: it is needed
for this format only.
"""

from __future__ import annotations

import os
import pickle
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
from rwkv_jax.config import Config
from rwkv_jax.params import Params

if TYPE_CHECKING:
    import torch

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save has written zip archives since torch 1.6


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    size = path.stat().st_size  # FileNotFoundError for a missing file, as open() would
    if size == 0:
        raise CorruptCheckpointError(f"{path}: empty file")
    with open(path, "rb") as f:
        if f.read(4) != _ZIP_MAGIC:
            raise CorruptCheckpointError(f"{path}: not a torch zip archive (other format, corrupt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise UnsafeCheckpointError(
                f"{path}: the pickle asks for objects other than tensors and was not loaded "
                f"(a checkpoint should hold only tensors): {str(e).splitlines()[0]}"
            ) from e
        raise CorruptCheckpointError(f"{path}: corrupt pickle: {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CorruptCheckpointError(f"{path}: truncated or corrupt torch archive: {e}") from e
    if not isinstance(state, dict):
        raise UnsupportedFormatError(f"{path}: expected a state dict, got {type(state).__name__}")
    nested = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if nested:  # e.g. a training checkpoint with a "state_dict" entry
        raise UnsupportedFormatError(
            f"{path}: expected a flat state dict {{name: tensor}}; not tensors: {nested[:5]}"
        )
    return state


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype:
    import torch

    if tensor.dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(torch.empty(0, dtype=tensor.dtype).numpy().dtype)
    except TypeError as e:
        raise DtypeError(f"torch dtype {tensor.dtype} has no numpy equivalent") from e


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A view of the tensor's bytes (no copy); bf16 goes through int16, which numpy knows."""
    import torch

    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _to_torch(array: np.ndarray) -> torch.Tensor:
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
        return _to_numpy(self._state[key])


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
    dtype: Any = None,
    layer0_v: bool = True,
    on_tensor: OnTensor | None = None,
) -> None:
    """Writes the official format (loadable by the `rwkv` package with `RWKV_V7_ON=1`).

    `layer0_v=False` leaves out layer 0's unused v0/v1/v2, as some released files do. The file
    appears only once complete.
    """
    import torch

    path = Path(path)
    if path.suffix != ".pth":  # the official loader appends ".pth" to the name it is given
        raise UnsupportedFormatError(f"{path}: an official checkpoint file name ends in .pth")
    planned = plan_tensors(params, "pth", dtype=dtype, layer0_v=layer0_v, on_tensor=on_tensor)
    state = {p.name: _to_torch(p.make()) for p in planned}
    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
