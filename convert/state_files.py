"""The RWKV ecosystem's state files in and out, so that an edited state runs in any RWKV runtime
and a state tuned elsewhere can be edited here.

Two formats, both written with `torch.save` (`.pth`):

`list`: the official `rwkv` package's state, exactly the list `model.forward(tokens, state)`
    takes and returns, so `torch.load(path)` can be passed straight to `forward`. For layer i:
    `state[3i]` = att_x `[C]`, `state[3i+1]` = wkv `[H, N, N]` float32 in `[value, key]` order,
    `state[3i+2]` = ffn_x `[C]`. Source: `rwkv` 0.8.32 `rwkv/model.py`, `RWKV_x070`
    (`generate_zero_state`; "state: 0=att_x_prev 1=att_kv 2=ffn_x_prev").
`peft`: RWKV-PEFT's state-tuning output, `{"blocks.{i}.att.time_state": [H, N, N]}` (also read
    and written as `.safetensors` with the same names). It holds the initial wkv matrices only:
    the token shifts start from zero. Sources (JL-er/RWKV-PEFT): `rwkvt/rwkv7/att.py`,
    `RWKV_Tmix_x070_State` (`self.time_state = nn.Parameter(torch.zeros(n_head, head_size,
    head_size))`, the layer's initial wkv state); `rwkvt/operator/rwkvop.py`, `RUN_RWKV7_STATE`
    (hands `time_state.transpose(1, 2)` to flash-linear-attention, whose initial state is
    `[key, value]`, and its Triton path reads `y = state @ r`: the file holds `[value, key]`,
    BlinkDL's order, the same as `State.wkv`); `rwkvt/lightning_train/trainer.py` (saves the
    state-dict entries whose names contain "state", with the `model.` prefix removed).

Reading checks the names, shapes and values (NaN/Inf) and refuses pickles that are not plain
tensors; a `peft` file cannot hold token shifts, so writing a state whose shifts are not zero to
it is refused unless `shifts="drop"` says to lose them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import jax.numpy as jnp
import numpy as np

from convert import safetensors
from convert.assemble import Planned, as_dtype
from convert.errors import NonFiniteError, StateFileError
from convert.pth import to_numpy, to_torch, torch_load, torch_save
from rwkv_jax.config import Config
from rwkv_jax.state import State

StateFormat = Literal["list", "peft"]
_PEFT_NAME = "blocks.{i}.att.time_state"
_PEFT_KEY = re.compile(r"^blocks\.(\d+)\.att\.time_state$")


def _host(state: State) -> dict[str, np.ndarray]:
    return {name: np.array(getattr(state, name), np.float32) for name in ("wkv", "att_shift", "ffn_shift")}


def save_state(
    state: State,
    path: str | os.PathLike,
    *,
    format: StateFormat = "list",
    dtype: str | None = None,
    shifts: Literal["keep", "drop"] = "keep",
) -> Path:
    """Writes one (unbatched) state as a state file; the file appears only once complete.

    `dtype` ("fp32", "bf16", "fp16") is the stored dtype of the token shifts (`list`; the wkv
    stays float32, as the package keeps it) or of `time_state` (`peft`); default float32.
    """
    path = Path(path)
    if state.batch_shape != ():
        raise ValueError(f"a state file holds one state; this one has batch shape {state.batch_shape}")
    host = _host(state)
    out_dtype = as_dtype(dtype) or np.dtype(np.float32)
    if format == "list":
        if path.suffix != ".pth":
            raise StateFileError(f"{path}: a state list is a torch file; its name ends in .pth")
        tensors = []
        for i in range(host["wkv"].shape[0]):
            tensors += [host["att_shift"][i].astype(out_dtype), host["wkv"][i], host["ffn_shift"][i].astype(out_dtype)]
        return torch_save([to_torch(np.ascontiguousarray(t)) for t in tensors], path)
    if format != "peft":
        raise ValueError(f"unknown state file format {format!r}; use 'list' or 'peft'")
    if shifts == "keep" and (host["att_shift"].any() or host["ffn_shift"].any()):
        raise StateFileError(
            f"{path}: a peft state file holds only the wkv matrices, and this state's token shifts "
            "are not zero; write format='list', or pass shifts='drop' to lose them"
        )
    named = {_PEFT_NAME.format(i=i): np.ascontiguousarray(w.astype(out_dtype)) for i, w in enumerate(host["wkv"])}
    if path.suffix == ".safetensors":
        partial = path.with_name(f".{path.name}.partial")
        try:
            tensors = [Planned(k, v.shape, v.dtype, lambda v=v: v) for k, v in named.items()]
            safetensors.write(partial, tensors, {"format": "pt"})
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path.absolute()
    if path.suffix != ".pth":
        raise StateFileError(f"{path}: a peft state file name ends in .pth or .safetensors")
    return torch_save({k: to_torch(v) for k, v in named.items()}, path)


def load_state(path: str | os.PathLike, cfg: Config | None = None) -> State:
    """A state file in either format (told apart by its contents) as a `State`; with `cfg`, one
    that belongs to another model is refused, naming both shapes."""
    path = Path(path)
    if path.suffix == ".safetensors":
        file = safetensors.SafetensorsFile(path)
        state = _from_peft(path, {k: file.array(k) for k in file.keys()})
    else:
        import torch

        loaded = torch_load(path)
        if isinstance(loaded, dict):
            state = _from_peft(path, {str(k): _tensor(path, str(k), v) for k, v in loaded.items()})
        elif isinstance(loaded, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in loaded):
            state = _from_list(path, [_tensor(path, f"state[{j}]", t) for j, t in enumerate(loaded)])
        else:
            raise StateFileError(f"{path}: expected the rwkv package's state list or a {{name: tensor}} dict, "
                                 f"got {type(loaded).__name__}")
    if cfg is not None and not state.matches(cfg):
        raise StateFileError(
            f"{path}: the state (wkv {state.wkv.shape}, shifts {state.att_shift.shape}) does not belong to "
            f"a model with L={cfg.n_layer}, H={cfg.n_head}, N={cfg.head_size}, D={cfg.n_embd}"
        )
    return state


def _tensor(path: Path, name: str, value: object) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor):
        raise StateFileError(f"{path}: {name} is a {type(value).__name__}, not a tensor")
    if not value.is_floating_point():
        raise StateFileError(f"{path}: {name} has dtype {value.dtype}, expected a float type")
    return to_numpy(value)


def _checked(path: Path, name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if tuple(array.shape) != shape:
        raise StateFileError(f"{path}: {name} has shape {tuple(array.shape)}, expected {shape}")
    out = np.asarray(array, np.float32)
    if not np.isfinite(out).all():
        raise NonFiniteError(f"{path}: {name} holds {int(np.count_nonzero(~np.isfinite(out)))} NaN/Inf values")
    return out


def _from_peft(path: Path, named: dict[str, np.ndarray]) -> State:
    layers = {int(m.group(1)): k for k in named if (m := _PEFT_KEY.match(k))}
    if (odd := sorted(set(named) - set(layers.values()))) or not layers:
        raise StateFileError(f"{path}: a peft state file holds only blocks.{{i}}.att.time_state; "
                             f"it has {', '.join(odd[:5]) or 'none of them'}")
    if (gaps := sorted(set(range(max(layers) + 1)) - set(layers))):
        raise StateFileError(f"{path}: no time_state for layers {gaps}")
    first = named[layers[0]].shape
    if len(first) != 3 or first[1] != first[2]:
        raise StateFileError(f"{path}: {layers[0]} has shape {tuple(first)}, expected [H, N, N]")
    wkv = np.stack([_checked(path, layers[i], named[layers[i]], tuple(first)) for i in range(len(layers))])
    shift = np.zeros((len(layers), first[0] * first[1]), np.float32)
    return State(wkv=jnp.asarray(wkv), att_shift=jnp.asarray(shift), ffn_shift=jnp.asarray(shift))


def _from_list(path: Path, tensors: list[np.ndarray]) -> State:
    if not tensors or len(tensors) % 3:
        raise StateFileError(f"{path}: a state list holds [att_x, wkv, ffn_x] per layer; it has {len(tensors)} "
                             "tensors, not a multiple of 3")
    wkv_shape = tuple(tensors[1].shape)
    if len(wkv_shape) != 3 or wkv_shape[1] != wkv_shape[2]:
        raise StateFileError(f"{path}: state[1] (layer 0's wkv) has shape {wkv_shape}, expected [H, N, N]")
    shift_shape = (wkv_shape[0] * wkv_shape[1],)
    parts = {"att": [], "wkv": [], "ffn": []}
    for j, array in enumerate(tensors):
        kind = ("att", "wkv", "ffn")[j % 3]
        parts[kind].append(_checked(path, f"state[{j}] (layer {j // 3} {kind})", array,
                                    wkv_shape if kind == "wkv" else shift_shape))
    return State(wkv=jnp.asarray(np.stack(parts["wkv"])), att_shift=jnp.asarray(np.stack(parts["att"])),
                 ffn_shift=jnp.asarray(np.stack(parts["ffn"])))
