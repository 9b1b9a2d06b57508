"""`convert()`: official checkpoint -> rwkv_jax checkpoint, or back, picking formats by path;
`read_checkpoint()`: the import half alone, in memory; `load()`: any checkpoint as a `Model`.

Import reads everything (checking names, shapes, dtypes and values) before anything is written,
and `rwkv_jax.checkpoint.save` writes to a temporary directory renamed at the end, so a bad input
never leaves a partial output behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from convert.assemble import OnTensor, SourceMeta
from convert.errors import UnsupportedFormatError, VocabMismatchError
from convert.hf import INDEX, SINGLE, read_hf, write_hf, write_safetensors
from convert.keymap import Naming
from convert.pth import read_pth, write_pth
from rwkv_jax import checkpoint
from rwkv_jax.atomic import check_parents
from rwkv_jax.bundle import Model
from rwkv_jax.config import Config
from rwkv_jax.mesh import place
from rwkv_jax.params import Params
from rwkv_jax.quant import dequantize, quantize
from rwkv_jax.tokenizer import WORLD_VOCAB, Tokenizer, load_tokenizer

Format = Literal["auto", "pth", "hf"]


def _is_rwkv_jax_checkpoint(path: Path) -> bool:
    return (path / checkpoint.META).is_file()


def detect_format(path: str | os.PathLike) -> Literal["pth", "hf"]:
    """The official format of `path` from its name (a file) or contents (a directory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        if (path / SINGLE).is_file() or (path / INDEX).is_file():
            return "hf"
        raise UnsupportedFormatError(
            f"{path}: a directory to import needs {SINGLE} or {INDEX} (a HF checkpoint)"
        )
    if path.suffix == ".pth":
        return "pth"
    if path.suffix == ".safetensors" or path.name.endswith(".index.json"):
        return "hf"
    raise UnsupportedFormatError(
        f"{path}: unknown extension {path.suffix!r}; expected .pth, .safetensors, "
        "a .index.json or a HF directory (or pass format=)"
    )


def read_checkpoint(
    src: str | os.PathLike,
    *,
    format: Format = "auto",
    dtype: Any = None,
    on_tensor: OnTensor | None = None,
) -> tuple[Params, Config, SourceMeta]:
    """An official checkpoint (`.pth`, `.safetensors`, index json or HF directory, any naming)
    read into params with every check of the converter; nothing is written."""
    fmt = detect_format(src) if format == "auto" else format
    read = {"pth": read_pth, "hf": read_hf}[fmt]
    return read(src, dtype=dtype, on_tensor=on_tensor)


def check_vocab(src: str | os.PathLike, cfg: Config, tokenizer: Tokenizer | None) -> None:
    """Refuses a tokenizer with ids the embedding has no rows for."""
    if tokenizer is not None and tokenizer.max_id >= cfg.vocab_size:
        raise VocabMismatchError(
            f"{src}: the embedding has {cfg.vocab_size} rows but the tokenizer "
            f"{tokenizer.name!r} uses ids up to {tokenizer.max_id}; pass the model's vocab file, "
            "or the vocab 'bytes' (id = byte value) or 'none' (token ids only)"
        )


def load(
    path_or_name: str | os.PathLike,
    *,
    expect: Config | None = None,
    verify: bool = True,
    dtype: str | None = None,
    vocab: str | os.PathLike | None = None,
    sharding: checkpoint.ParamSharding = None,
) -> Model:
    """Any checkpoint as a `Model`: a bundled name or an rwkv_jax checkpoint (`rwkv_jax.load`), or
    an official checkpoint (`.pth`, `.safetensors`, index json or HF folder, in any naming),
    converted in memory with every check of `python -m convert` (the same errors; nothing is
    written). `vocab` is an official checkpoint's vocab spec (`rwkv_jax.tokenizer`; default the
    RWKV World vocab); an rwkv_jax checkpoint records its own. `sharding` places the params
    (`rwkv_jax.checkpoint.load`; an official checkpoint is read on the host first).
    """
    path = Path(path_or_name)
    if not path.exists() or _is_rwkv_jax_checkpoint(path):
        if vocab is not None:
            raise ValueError(f"{path_or_name}: an rwkv_jax checkpoint records its vocab; vocab= is for "
                             "official checkpoints")
        return checkpoint.load_model(path_or_name, expect=expect, verify=verify, dtype=dtype, sharding=sharding)
    if path.is_dir() and not any((path / n).is_file() for n in (SINGLE, INDEX)):
        raise FileNotFoundError(f"{path} is not an rwkv_jax checkpoint (no {checkpoint.META}), nor a Hugging "
                                f"Face checkpoint (no {SINGLE} or {INDEX})")
    tokenizer = load_tokenizer(vocab if vocab is not None else WORLD_VOCAB)
    narrow = checkpoint.QUANTIZE.get(dtype)
    params, cfg, _ = read_checkpoint(path, dtype="fp32" if narrow else dtype)
    check_vocab(path, cfg, tokenizer)
    checkpoint.check_expected(path, cfg, expect)
    if narrow:
        return Model(params=quantize(params, narrow), cfg=cfg, tokenizer=tokenizer)
    return Model(params=place(params, checkpoint.shardings(cfg, sharding)), cfg=cfg, tokenizer=tokenizer)


def _export(params: Params, dst: Path, fmt: Format, naming: Naming | None, dtype: Any,
            overwrite: bool, on_tensor: OnTensor | None) -> Path:
    """`params` written to `dst`: `.pth`, one `.safetensors` file, or a HF directory."""
    if fmt == "auto":
        fmt = "pth" if dst.suffix == ".pth" else "hf"
    if fmt == "pth":
        write_pth(params, dst, naming=naming or "blink", dtype=dtype, on_tensor=on_tensor)
        return dst
    if dst.suffix == ".safetensors":
        return write_safetensors(params, dst, naming=naming or "fla", dtype=dtype, on_tensor=on_tensor)
    return write_hf(params, dst, naming=naming or "fla", dtype=dtype, overwrite=overwrite,
                    on_tensor=on_tensor)


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: Any = None,
    format: Format = "auto",
    naming: Naming | None = None,
    vocab: str | os.PathLike | None = None,
    overwrite: bool = False,
    on_tensor: OnTensor | None = None,
) -> Path:
    """Converts `src` into `dst` and returns `dst`.

    Import (src is a `.pth`, safetensors file, index json or HF directory, in any naming): writes
    an rwkv_jax checkpoint that `rwkv_jax.load(dst)` opens, recording `vocab` (a vocab file,
    or a built-in name: `bytes`, `none`; see `rwkv_jax.tokenizer`; default the RWKV World vocab).
    Export (src is an rwkv_jax checkpoint): writes `.pth` when dst ends in `.pth`, one
    safetensors file when it ends in `.safetensors`, else a HF directory, with the tensors in
    `naming` ("blink", "fla" or "transformers"; default BlinkDL for `.pth`,
    flash-linear-attention otherwise). `format`
    names the official side's container; `dtype` ("fp32", "bf16") defaults to the source's, and
    an import takes "int8" or "bf16-weights" too: weight-only quantized params
    (`rwkv_jax.quant.quantize`; an export from such a checkpoint writes their float32 values).
    """
    src, dst = Path(src), Path(dst)
    check_parents(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    if src.is_dir() and _is_rwkv_jax_checkpoint(src):
        params = dequantize(checkpoint.load(src).params)
        if dtype in checkpoint.QUANTIZE:
            raise ValueError(f"dtype={dtype!r} applies to imports; an export writes fp32 or bf16")
        return _export(params, dst, format, naming, dtype, overwrite, on_tensor)
    if naming is not None:
        raise ValueError(f"naming={naming!r} applies to exports; an import reads the naming from {src}")
    tokenizer = load_tokenizer(vocab if vocab is not None else WORLD_VOCAB)
    narrow = checkpoint.QUANTIZE.get(dtype)
    params, cfg, _ = read_checkpoint(src, format=format, dtype="fp32" if narrow else dtype, on_tensor=on_tensor)
    check_vocab(src, cfg, tokenizer)
    params = quantize(params, narrow) if narrow else params
    return checkpoint.save(
        dst, params, cfg, str(vocab) if vocab is not None else WORLD_VOCAB, overwrite=overwrite
    )
