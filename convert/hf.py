"""Safetensors checkpoints: a Hugging Face directory, a sharded index, or a single file.

A directory holds `config.json` and either `model.safetensors` or shards listed by
`model.safetensors.index.json`; a single `.safetensors` file or an index file also works as input.
The tensor names may follow any naming in `convert.keymap` (detected on reading). The tensors
alone define the model: `config.json` is written for HF tools, never read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from convert import safetensors
from convert.assemble import OnTensor, Planned, SourceMeta, plan_tensors, read_params
from convert.errors import CorruptCheckpointError, UnsupportedFormatError
from convert.keymap import Naming
from rwkv_jax.atomic import atomic_directory, make_dirs
from rwkv_jax.config import Config
from rwkv_jax.params import Params

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
CONFIG = "config.json"


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
    """All tensors of a (possibly sharded) safetensors checkpoint, each found in its one file."""

    def __init__(self, path: str | os.PathLike):
        self.label = str(path)
        files, weight_map = _locate(Path(path))
        self._where: dict[str, safetensors.SafetensorsFile] = {}
        for file in map(safetensors.SafetensorsFile, files):
            for key in file.keys():
                if key in self._where:
                    raise CorruptCheckpointError(f"{self.label}: {key} is stored in two shards")
                if weight_map is not None and weight_map.get(key) != file.path:
                    raise CorruptCheckpointError(
                        f"{self.label}: {key} is in {file.path.name}, the index says "
                        f"{weight_map.get(key, 'nothing')}"
                    )
                self._where[key] = file
        if weight_map is not None and (unlisted := weight_map.keys() - self._where.keys()):
            raise CorruptCheckpointError(f"{self.label}: indexed, in no shard: {sorted(unlisted)}")

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._where[key].shape(key)

    def dtype(self, key: str) -> np.dtype:
        return self._where[key].dtype(key)

    def array(self, key: str) -> np.ndarray:
        return self._where[key].array(key)


def read_hf(
    path: str | os.PathLike,
    *,
    dtype: Any = None,
    on_tensor: OnTensor | None = None,
) -> tuple[Params, Config, SourceMeta]:
    """Params (jax CPU arrays in the file's dtype unless `dtype`), the inferred Config, meta."""
    return read_params(HFSource(path), "safetensors", dtype=dtype, on_tensor=on_tensor)


def hf_config(cfg: Config, dtype: np.dtype, naming: Naming = "fla") -> dict[str, Any] | None:
    """`config.json` for the model class that reads `naming`: flash-linear-attention's
    `RWKV7ForCausalLM`, or transformers' `Rwkv7ForCausalLM`. None for BlinkDL names, which no
    Hugging Face class reads."""
    if naming == "transformers":
        return {
            "architectures": ["Rwkv7ForCausalLM"],
            "model_type": "rwkv7",
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.n_embd,
            "num_hidden_layers": cfg.n_layer,
            "head_dim": cfg.head_size,
            "num_heads": cfg.n_head,
            "decay_low_rank_dim": cfg.d_decay,
            "a_low_rank_dim": cfg.d_aaa,
            "v_low_rank_dim": cfg.d_mv,
            "gate_low_rank_dim": cfg.d_gate,
            "intermediate_size": cfg.dim_ffn,
            "norm_eps": 1e-5,
            "norm_bias": True,
            "tie_word_embeddings": False,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "pad_token_id": 0,
            "dtype": dtype.name,
        }
    if naming == "blink":
        return None
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
    naming: Naming = "fla",
    dtype: Any = None,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    on_tensor: OnTensor | None = None,
) -> Path:
    """Writes a HF checkpoint directory with the tensors in `naming` (flash-linear-attention by
    default, without layer 0's `v_lora` as its models have), and the `config.json` of the class
    that reads that naming (none for BlinkDL names); sharded with an index when `max_shard_bytes`
    is given and exceeded. The directory appears only once complete.
    """
    with atomic_directory(path, overwrite=overwrite) as tmp:
        planned = plan_tensors(params, naming, dtype=dtype, on_tensor=on_tensor)
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
        config = hf_config(Config.from_params(params), planned[0].dtype, naming)
        if config is not None:
            (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    return Path(path).absolute()


def write_safetensors(
    params: Params,
    path: str | os.PathLike,
    *,
    naming: Naming = "fla",
    dtype: Any = None,
    on_tensor: OnTensor | None = None,
) -> Path:
    """Writes one `.safetensors` file with the tensors in `naming` (BlinkDL names give what the
    ai00 / web-rwkv converters produce). The file appears only once complete."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UnsupportedFormatError(f"{path}: a safetensors file name ends in .safetensors")
    planned = plan_tensors(params, naming, dtype=dtype, on_tensor=on_tensor)
    make_dirs(path.parent)
    partial = path.with_name(f".{path.name}.partial")
    try:
        safetensors.write(partial, planned, {"format": "pt"})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path.absolute()

