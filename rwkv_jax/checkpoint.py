"""Saving and loading models (and training runs' checkpoints) with orbax. Every orbax call in
the project lives here.

A checkpoint is a directory:
    meta.json   {"format": 1, "config": {...}, "dtype": "float32", "vocab": "<built-in name or file>",
                 "sha256": {"<param path>": "<hex digest of the array's bytes>", ...},
                 "quantized": "int8" | "bfloat16"   (only for `rwkv_jax.quant.quantize`d params)}
    vocab.txt   (only for a vocab that is not built in; see `rwkv_jax.tokenizer`)
    params/     the params pytree, written by orbax

`load` checks every restored array against its recorded SHA-256, so a flipped byte in `params/`
is refused rather than read as a weight. Hashing runs at about 1.5 GB/s on one CPU core (SHA-NI):
~10 ms of a ~0.15 s load for the bundled model (7 MB), ~4 s for a 1.5B fp32 model (6 GB);
`verify=False` skips it.
Checkpoints written before checksums existed (no "sha256" in meta.json) load unverified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from rwkv_jax.atomic import atomic_directory, read_json_object
from rwkv_jax.bundle import Model
from rwkv_jax.config import Config
from rwkv_jax.mesh import param_shardings, to_host
from rwkv_jax.params import DTYPES, Params, abstract_params, cast_params, check_params
from rwkv_jax.quant import DTYPES as QUANT_DTYPES
from rwkv_jax.quant import abstract_quantized, is_narrow, loop_safe, narrow_dtype, quantize, stored
from rwkv_jax.tokenizer import BUILT_IN_VOCABS, NO_VOCAB, WORLD_VOCAB, Tokenizer, load_tokenizer, save_vocab

FORMAT = 1
META = "meta.json"
VOCAB_FILE = "vocab.txt"
CHUNK_BYTES = 16 << 20
QUANTIZE = {"int8": "int8", "bf16-weights": "bfloat16"}  # load_model's quantizing dtypes


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read as it is: damaged, truncated or hand-edited."""


def _dtype_name(params: Params) -> str:
    """The one dtype of the params' float leaves (a quantized matrix aside)."""
    dtypes = {jnp.dtype(x.dtype).name for x in jax.tree.leaves(params, is_leaf=is_narrow) if not is_narrow(x)}
    if len(dtypes) != 1:
        raise ValueError(f"params mix dtypes {sorted(dtypes)}; cast them to one dtype before saving")
    return dtypes.pop()


def checksums(params: Params) -> dict[str, str]:
    """SHA-256 of every leaf's bytes, by its dotted path (`blocks.att.w1`); one leaf at a time on
    the host (`rwkv_jax.mesh.to_host`)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = ".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
        leaf = to_host(leaf)
        out[name] = hashlib.sha256(np.ascontiguousarray(leaf).view(np.uint8).data).hexdigest()
    return out


def _is_built_in(tokenizer: Tokenizer) -> bool:
    """Whether `tokenizer` is a built-in vocab (by content: a vocab file may share a name)."""
    if tokenizer.name not in BUILT_IN_VOCABS or tokenizer.name == NO_VOCAB:
        return False
    return tokenizer.id_to_bytes == load_tokenizer(tokenizer.name).id_to_bytes


def save(
    path: str | os.PathLike,
    params: Params,
    cfg: Config,
    tokenizer: Tokenizer | str | None = WORLD_VOCAB,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes a checkpoint atomically: into a temporary sibling directory, renamed at the end.

    `tokenizer` is a built-in vocab name (`rwkv_jax.tokenizer`), a vocab file path, a `Tokenizer`
    (its vocab is copied unless built in), or None (token ids only).
    """
    check_params(params, cfg)
    params = stored(params)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        if tokenizer is None:
            vocab = NO_VOCAB
        elif isinstance(tokenizer, Tokenizer):
            if _is_built_in(tokenizer):
                vocab = tokenizer.name
            else:
                save_vocab(tokenizer, tmp / VOCAB_FILE)
                vocab = VOCAB_FILE
        elif str(tokenizer) in BUILT_IN_VOCABS:
            vocab = str(tokenizer)
        else:
            shutil.copyfile(tokenizer, tmp / VOCAB_FILE)
            vocab = VOCAB_FILE
        meta = {
            "format": FORMAT,
            "config": dataclasses.asdict(cfg),
            "dtype": _dtype_name(params),
            "vocab": vocab,
            "sha256": checksums(params),
        }
        if narrow_dtype(params) is not None:
            meta["quantized"] = narrow_dtype(params)
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        # Synchronous, uncompressed, at most 1 GB in flight: a multi-GB model is written without
        # staging a second full copy in host memory. Chunks of at most CHUNK_BYTES: a sharded
        # restore reads only the chunks of its own shards.
        handler = ocp.PyTreeCheckpointHandler(use_compression=False, save_concurrent_gb=1)
        chunks = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), params)
        with ocp.Checkpointer(handler) as checkpointer:
            checkpointer.save(tmp / "params", args=ocp.args.PyTreeSave(params, save_args=chunks))
    return Path(path).absolute()


_META_FIELDS = {"format": int, "config": dict, "dtype": str, "vocab": str}


def read_meta(path: str | os.PathLike) -> dict:
    """meta.json, checked field by field; a damaged one raises `CheckpointError` naming the field."""
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not an rwkv_jax checkpoint (no {META})")
    meta = read_json_object(meta_path, CheckpointError)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: field 'format': unsupported checkpoint format {meta.get('format')!r}")
    for field, kind in _META_FIELDS.items():
        if not isinstance(meta.get(field), kind):
            got = "missing" if field not in meta else f"a {type(meta[field]).__name__}"
            raise CheckpointError(f"{meta_path}: field {field!r} must be a {kind.__name__}, it is {got}")
    if meta["dtype"] not in ("float32", "bfloat16", "float16"):
        raise CheckpointError(f"{meta_path}: field 'dtype': {meta['dtype']!r} is not float32, bfloat16 or float16")
    try:
        meta["config"] = Config(**meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path}: field 'config': {e}") from None
    if meta.get("quantized", "int8") not in QUANT_DTYPES:
        raise CheckpointError(f"{meta_path}: field 'quantized': {meta['quantized']!r} is not one of {QUANT_DTYPES}")
    if not isinstance(meta.get("sha256", {}), dict):
        raise CheckpointError(f"{meta_path}: field 'sha256' must be an object of hex digests")
    return meta


def _verify(path: Path, params: Params, recorded: dict) -> None:
    actual = checksums(params)
    if recorded.keys() != actual.keys():
        odd = sorted(recorded.keys() ^ actual.keys())
        raise CheckpointError(f"{path / META}: field 'sha256' does not list the params' arrays (differs at "
                              f"{', '.join(odd[:5])}{', ...' if len(odd) > 5 else ''})")
    damaged = sorted(name for name, digest in actual.items() if recorded[name] != digest)
    if damaged:
        raise CheckpointError(f"{path / 'params'}: {', '.join(damaged)} do not match the SHA-256 recorded in "
                              f"{META}: the checkpoint is damaged (load(..., verify=False) reads it anyway)")


def check_expected(path: Path, cfg: Config, expect: Config | None) -> None:
    """Refuses a checkpoint whose config differs from `expect`, naming the fields."""
    if expect is not None and expect != cfg:
        diff = [
            f"{f.name}: checkpoint {getattr(cfg, f.name)} != expected {getattr(expect, f.name)}"
            for f in dataclasses.fields(Config)
            if getattr(cfg, f.name) != getattr(expect, f.name)
        ]
        raise ValueError(f"checkpoint {path} has another shape: " + "; ".join(diff))


ParamSharding = Mesh | jax.sharding.Sharding | Params | None


def shardings(cfg: Config, sharding: ParamSharding) -> Params:
    """A params-shaped tree of shardings: this process's first device (None), `rwkv_jax.mesh.param_shardings`
    (a `Mesh`), one sharding for every leaf, or such a tree as it is."""
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    if isinstance(sharding, Mesh):
        return param_shardings(cfg, sharding)
    if isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda _: sharding, abstract_params(cfg))
    return sharding


def load(path: str | os.PathLike, *, expect: Config | None = None, verify: bool = True,
         sharding: ParamSharding = None) -> Model:
    """Restores a checkpoint; with `expect`, refuses one whose config differs, naming the fields.
    `verify` checks every array against its recorded SHA-256 (see the module docstring for the cost).
    `sharding` (see `shardings`; a `Mesh` lays the params out by `rwkv_jax.mesh.param_specs`): each
    device's shards are read straight from the files, with no full copy of the model on the host."""
    path = Path(path).absolute()
    meta = read_meta(path)
    cfg = meta["config"]
    check_expected(path, cfg, expect)
    abstract = abstract_params(cfg, jnp.dtype(meta["dtype"]))
    if "quantized" in meta:
        if sharding is not None:
            raise ValueError(f"{path} holds quantized params, which load on one device (sharding=None)")
        one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one),
                              abstract_quantized(abstract, meta["quantized"]))
    else:
        target = jax.tree.map(lambda s, where: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=where),
                              abstract, shardings(cfg, sharding))
    if not (path / "params").is_dir():
        raise CheckpointError(f"{path}: no params/ folder")
    # at most 1 GB read ahead: beyond the restored arrays, the host holds no second copy of the model
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(restore_concurrent_gb=1))
    try:
        restore_args = ocp.checkpoint_utils.construct_restore_args(target)
        params = checkpointer.restore(path / "params", args=ocp.args.PyTreeRestore(target, restore_args=restore_args))
    except Exception as e:  # orbax and TensorStore raise bare Exceptions for unreadable files
        lines = [line.strip() for line in str(e).split(" See full TensorStore details")[0].splitlines()]
        reason = next((line for line in lines if line), "")[:300]
        raise CheckpointError(f"{path / 'params'}: damaged, or does not match its own config in {META}: "
                              f"{type(e).__name__}: {reason}") from None
    finally:
        checkpointer.close()
    if verify and "sha256" in meta:
        _verify(path, params, meta["sha256"])
    params = loop_safe(params)
    vocab = meta["vocab"]
    tokenizer = load_tokenizer(vocab if vocab in BUILT_IN_VOCABS else path / vocab)
    return Model(params=params, cfg=cfg, tokenizer=tokenizer)


class StepCheckpoints:
    """A training run's numbered checkpoints of one pytree (params and optimizer state) in
    `directory`, the latest `keep` of them kept: what resumes a run, not a model to load."""

    def __init__(self, directory: Path, *, keep: int):
        self._manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, step: int, like: Any) -> Any:
        """The tree saved at `step`, restored with the shapes and dtypes of `like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def save(self, step: int, tree: Any) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(tree))

    def close(self) -> None:
        """Waits for pending writes, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def bundled_models() -> list[str]:
    root = resources.files("rwkv_jax") / "models"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / META).is_file())


def resolve(path_or_name: str | os.PathLike) -> Path:
    """A bundled model name (`rime-tiny`) or a checkpoint directory."""
    if os.path.isdir(path_or_name):
        return Path(path_or_name)
    if str(path_or_name) in bundled_models():
        return Path(str(resources.files("rwkv_jax") / "models" / str(path_or_name)))
    raise FileNotFoundError(
        f"{path_or_name!s} is neither a checkpoint directory nor a bundled model "
        f"(bundled: {', '.join(bundled_models()) or 'none'})"
    )


def load_model(
    path_or_name: str | os.PathLike,
    *,
    expect: Config | None = None,
    verify: bool = True,
    dtype: str | None = None,
    sharding: ParamSharding = None,
) -> Model:
    """`rwkv_jax.load`: a bundled model name or an rwkv_jax checkpoint directory, in the
    `from_pretrained` habit. `dtype` ("fp32", "bf16", "fp16") casts (default: as stored);
    "int8" or "bf16-weights" quantizes the float params (`rwkv_jax.quant`).

    Official checkpoints (`.pth`, `.safetensors`, index json, HF folder) load with `convert.load`,
    which converts them in memory; rwkv_jax itself never imports the converter. `sharding` places
    the params (see `load`).
    """
    if dtype is not None and dtype not in DTYPES and dtype not in QUANTIZE:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPES) + sorted(QUANTIZE)}")
    path = Path(path_or_name)
    if path.exists() and not (path / META).is_file():
        raise FileNotFoundError(f"{path} is not an rwkv_jax checkpoint (no {META}); an official checkpoint "
                                "(.pth, .safetensors, index json or Hugging Face folder) loads with convert.load")
    model = load(resolve(path_or_name), expect=expect, verify=verify, sharding=sharding)
    if dtype is None:
        return model
    if dtype in QUANTIZE:
        return dataclasses.replace(model, params=quantize(model.params, QUANTIZE[dtype]))
    return dataclasses.replace(model, params=cast_params(model.params, DTYPES[dtype]))
