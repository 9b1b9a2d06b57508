"""`convert()`: official checkpoint -> rwkv_jax checkpoint, or back, picking formats by path.

Import reads everything (checking names, shapes, dtypes and values) before anything is written,
and `rwkv_jax.checkpoint.save` writes to a temporary directory renamed at the end, so a bad input
never leaves a partial output behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from convert.assemble import OnTensor
from convert.errors import UnsupportedFormatError, VocabMismatchError
from convert.hf import INDEX, SINGLE, read_hf, write_hf
from convert.pth import read_pth, write_pth
from rwkv_jax import checkpoint
from rwkv_jax.atomic import check_parents
from rwkv_jax.tokenizer import WORLD_VOCAB, load_tokenizer

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


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: Any = None,
    format: Format = "auto",
    vocab: str | os.PathLike | None = None,
    overwrite: bool = False,
    on_tensor: OnTensor | None = None,
) -> Path:
    """Converts `src` into `dst` and returns `dst`.

    Import (src is a `.pth`, safetensors file, index json or HF directory): writes an rwkv_jax
    checkpoint that `rwkv_jax.load(dst)` opens, recording `vocab` (a vocab file; default the
    RWKV World vocab). Export (src is an rwkv_jax checkpoint): writes `.pth` when dst ends in
    `.pth`, else a HF directory. `format` names the official side; `dtype` ("fp32", "bf16")
    defaults to the source's.
    """
    src, dst = Path(src), Path(dst)
    check_parents(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True to replace it")
    if src.is_dir() and _is_rwkv_jax_checkpoint(src):
        fmt = format if format != "auto" else ("pth" if dst.suffix == ".pth" else "hf")
        params = checkpoint.load(src).params
        if fmt == "pth":
            write_pth(params, dst, dtype=dtype, on_tensor=on_tensor)  # replaces dst at the end
            return dst
        return write_hf(params, dst, dtype=dtype, overwrite=overwrite, on_tensor=on_tensor)
    fmt = detect_format(src) if format == "auto" else format
    read = {"pth": read_pth, "hf": read_hf}[fmt]
    tokenizer = load_tokenizer(vocab if vocab is not None else WORLD_VOCAB)
    params, cfg, _ = read(src, dtype=dtype, on_tensor=on_tensor)
    if tokenizer.max_id >= cfg.vocab_size:
        raise VocabMismatchError(
            f"{src}: the embedding has {cfg.vocab_size} rows but the tokenizer "
            f"{tokenizer.name!r} uses ids up to {tokenizer.max_id}; pass the model's vocab file"
        )
    return checkpoint.save(
        dst, params, cfg, str(vocab) if vocab is not None else WORLD_VOCAB, overwrite=overwrite
    )

