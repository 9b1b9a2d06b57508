"""Saving and loading models with orbax. Every orbax call in the project lives here.

A checkpoint is a directory:
    meta.json   {"format": 1, "config": {...}, "dtype": "float32", "vocab": "<name or file>"}
    vocab.txt   (only for a vocab that is not bundled with the package)
    params/     the params pytree, written by orbax
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rwkv_jax.atomic import atomic_directory
from rwkv_jax.config import Config
from rwkv_jax.params import Params, abstract_params, check_params
from rwkv_jax.tokenizer import WORLD_VOCAB, Tokenizer, load_tokenizer, save_vocab

FORMAT = 1
META = "meta.json"
VOCAB_FILE = "vocab.txt"


@dataclasses.dataclass(frozen=True)
class Model:
    """What a checkpoint holds: params, their config and the tokenizer they were trained with."""

    params: Params
    cfg: Config
    tokenizer: Tokenizer


def _dtype_name(params: Params) -> str:
    dtypes = {jnp.dtype(x.dtype).name for x in jax.tree.leaves(params)}
    if len(dtypes) != 1:
        raise ValueError(f"params mix dtypes {sorted(dtypes)}; cast them to one dtype before saving")
    return dtypes.pop()


def save(
    path: str | os.PathLike,
    params: Params,
    cfg: Config,
    tokenizer: Tokenizer | str = WORLD_VOCAB,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes a checkpoint atomically: into a temporary sibling directory, renamed at the end.

    `tokenizer` is a bundled vocab name, a vocab file path, or a `Tokenizer` (its vocab is copied).
    """
    check_params(params, cfg)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        if isinstance(tokenizer, Tokenizer):
            if tokenizer.name == WORLD_VOCAB:
                vocab = WORLD_VOCAB
            else:
                save_vocab(tokenizer, tmp / VOCAB_FILE)
                vocab = VOCAB_FILE
        elif str(tokenizer) == WORLD_VOCAB:
            vocab = WORLD_VOCAB
        else:
            shutil.copyfile(tokenizer, tmp / VOCAB_FILE)
            vocab = VOCAB_FILE
        meta = {
            "format": FORMAT,
            "config": dataclasses.asdict(cfg),
            "dtype": _dtype_name(params),
            "vocab": vocab,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        # Synchronous, uncompressed, at most 1 GB in flight: a multi-GB model is written without
        # staging a second full copy in host memory.
        handler = ocp.PyTreeCheckpointHandler(use_compression=False, save_concurrent_gb=1)
        with ocp.Checkpointer(handler) as checkpointer:
            checkpointer.save(tmp / "params", args=ocp.args.PyTreeSave(params))
    return Path(path).absolute()


def read_meta(path: str | os.PathLike) -> dict:
    meta_path = Path(path) / META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not an rwkv_jax checkpoint (no {META})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return meta


def load(path: str | os.PathLike, *, expect: Config | None = None) -> Model:
    """Restores a checkpoint; with `expect`, refuses one whose config differs, naming the fields."""
    path = Path(path).absolute()
    meta = read_meta(path)
    cfg = Config(**meta["config"])
    if expect is not None and expect != cfg:
        diff = [
            f"{f.name}: checkpoint {getattr(cfg, f.name)} != expected {getattr(expect, f.name)}"
            for f in dataclasses.fields(Config)
            if getattr(cfg, f.name) != getattr(expect, f.name)
        ]
        raise ValueError(f"checkpoint {path} has another shape: " + "; ".join(diff))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        abstract_params(cfg, jnp.dtype(meta["dtype"])),
    )
    checkpointer = ocp.StandardCheckpointer()
    try:
        params = checkpointer.restore(path / "params", target)
    except (ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path} does not match its own config {cfg}: {e}") from e
    finally:
        checkpointer.close()
    vocab = meta["vocab"]
    tokenizer = load_tokenizer(vocab if vocab == WORLD_VOCAB else path / vocab)
    return Model(params=params, cfg=cfg, tokenizer=tokenizer)


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


def load_model(path_or_name: str | os.PathLike, *, expect: Config | None = None) -> Model:
    """`rwkv_jax.load`: the one-line entry point."""
    return load(resolve(path_or_name), expect=expect)
