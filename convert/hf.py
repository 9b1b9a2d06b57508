"""Hugging Face RWKV-7 checkpoints (the flash-linear-attention `model.layers.i.attn.*` layout).

A checkpoint is a directory with `config.json` and either `model.safetensors` or shards listed by
`model.safetensors.index.json`; a single `.safetensors` file or an index file also works as input.
The tensors alone define the model: `config.json` is written for HF tools, never read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from convert import safetensors
from convert.assemble import OnTensor, Planned, SourceMeta, plan_tensors, read_params
from convert.errors import (
    CorruptCheckpointError,
    KeyMismatchError,
    ShapeMismatchError,
    UnsupportedFormatError,
)
from convert.keymap import TOKEN_SHIFT
from rwkv_jax.atomic import atomic_directory
from rwkv_jax.config import Config
from rwkv_jax.params import Params

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
_LEGACY_SHIFT = ".attn.x_x"  # [6, C]: x_r, x_w, x_k, x_v, x_a, x_g fused (FLA, early 2025)


def _read_index(index: Path) -> dict[str, Path]:
    """name -> shard file, from an index json."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return {str(name): index.parent / str(file) for name, file in weight_map.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # JSON and UTF-8 errors too
        raise CorruptCheckpointError(f"{index}: not a safetensors index: {e!r}") from e


def _locate(path: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The safetensors files of a checkpoint, and the index's weight map when it is sharded."""
    if path.is_dir():
        if (path / INDEX).is_file():
            path = path / INDEX
        elif (path / SINGLE).is_file():
            return [path / SINGLE], None
        else:
            raise UnsupportedFormatError(f"{path}: holds neither {SINGLE} nor {INDEX}")
    if path.suffix == ".safetensors":
        return [path], None
    if path.name.endswith(".json"):
        weight_map = _read_index(path)
        shards = sorted(set(weight_map.values()))
        if missing := [str(s) for s in shards if not s.is_file()]:
            raise CorruptCheckpointError(f"{path}: shards listed but missing: {missing}")
        return shards, weight_map
    raise UnsupportedFormatError(f"{path}: expected a .safetensors file, index json or directory")


class HFSource:
    """All tensors of a (possibly sharded) HF checkpoint, with legacy fused token-shift rows split
    into the six names the table knows."""

    def __init__(self, path: str | os.PathLike):
        self.label = str(path)
        files, weight_map = _locate(Path(path))
        # name -> (file, stored name, row of a legacy fused tensor or None)
        self._where: dict[str, tuple[safetensors.SafetensorsFile, str, int | None]] = {}
        for file in map(safetensors.SafetensorsFile, files):
            for key in file.keys():
                if key in self._where:
                    raise CorruptCheckpointError(f"{self.label}: {key} is stored in two shards")
                if weight_map is not None and weight_map.get(key) != file.path:
                    raise CorruptCheckpointError(
                        f"{self.label}: {key} is in {file.path.name}, the index says "
                        f"{weight_map.get(key, 'nothing')}"
                    )
                self._where[key] = (file, key, None)
        if weight_map is not None and (unlisted := weight_map.keys() - self._where.keys()):
            raise CorruptCheckpointError(f"{self.label}: indexed, in no shard: {sorted(unlisted)}")
        for key in [k for k in self._where if k.endswith(_LEGACY_SHIFT)]:
            self._split_token_shift(key)

    def _split_token_shift(self, key: str) -> None:
        file, _, _ = self._where.pop(key)
        shape = file.shape(key)
        if len(shape) != 2 or shape[0] != len(TOKEN_SHIFT):
            raise ShapeMismatchError(f"{self.label}: {key} has shape {shape}, expected [6, C]")
        prefix = key[: -len("x_x")]
        if clash := [prefix + x for x in TOKEN_SHIFT if prefix + x in self._where]:
            raise KeyMismatchError(self.label, unexpected=[key, *clash])
        for row, x in enumerate(TOKEN_SHIFT):
            self._where[prefix + x] = (file, key, row)

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        file, stored, row = self._where[key]
        shape = file.shape(stored)
        return shape if row is None else shape[1:]

    def dtype(self, key: str) -> np.dtype:
        file, stored, _ = self._where[key]
        return file.dtype(stored)

    def array(self, key: str) -> np.ndarray:
        file, stored, row = self._where[key]
        array = file.array(stored)
        return array if row is None else array[row]


def read_hf(
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    on_tensor: OnTensor | None = None,
) -> tuple[Params, Config, SourceMeta]:
    """Params (jax CPU arrays in the file's dtype unless `dtype`), the inferred Config, meta."""
    return read_params(HFSource(path), "hf", dtype=dtype, on_tensor=on_tensor)


def hf_config(cfg: Config, dtype: np.dtype) -> dict[str, Any]:
    """`config.json` for flash-linear-attention's RWKV7 model class."""
    return {
        "architectures": ["RWKV7ForCausalLM"],
        "model_type": "rwkv7",
        "hidden_size": cfg.n_embd,
        "num_hidden_layers": cfg.n_layer,
        "head_dim": cfg.head_size,
        "num_heads": cfg.n_head,
        "vocab_size": cfg.vocab_size,
        "intermediate_size": cfg.dim_ffn,
        "decay_low_rank_dim": cfg.d_decay,
        "a_low_rank_dim": cfg.d_aaa,
        "v_low_rank_dim": cfg.d_mv,
        "gate_low_rank_dim": cfg.d_gate,
        "hidden_act": "sqrelu",
        "norm_first": True,
        "norm_bias": True,
        "norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": dtype.name,
    }


def _shards(planned: list[Planned], max_bytes: int | None) -> list[list[Planned]]:
    """Consecutive groups of at most `max_bytes` each (a bigger single tensor gets its own)."""
    groups: list[list[Planned]] = [[]]
    size = 0
    for p in planned:
        nbytes = int(np.prod(p.shape)) * p.dtype.itemsize
        if max_bytes is not None and groups[-1] and size + nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += nbytes
    return groups


def write_hf(
    params: Params,
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    on_tensor: OnTensor | None = None,
) -> Path:
    """Writes a HF checkpoint directory (no layer-0 `v_lora`, as in HF models); sharded with an
    index when `max_shard_bytes` is given and exceeded. The directory appears only once complete.
    """
    with atomic_directory(path, overwrite=overwrite) as tmp:
        planned = plan_tensors(params, "hf", dtype=dtype, on_tensor=on_tensor)
        groups = _shards(planned, max_shard_bytes)
        names = [SINGLE] if len(groups) == 1 else [
            f"model-{k:05d}-of-{len(groups):05d}.safetensors" for k in range(1, len(groups) + 1)
        ]
        total = sum(
            safetensors.write(tmp / name, group, {"format": "pt"})
            for name, group in zip(names, groups, strict=True)
        )
        if len(groups) > 1:
            index = {
                "metadata": {"total_size": total},
                "weight_map": {p.name: n for n, g in zip(names, groups, strict=True) for p in g},
            }
            (tmp / INDEX).write_text(json.dumps(index, indent=2))
        cfg = Config.from_params(params)
        (tmp / CONFIG).write_text(json.dumps(hf_config(cfg, planned[0].dtype), indent=2))
    return Path(path).absolute()

