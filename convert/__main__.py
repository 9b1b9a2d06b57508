"""`python -m convert IN OUT [--dtype fp32|bf16|int8|bf16-weights] [--format auto|pth|hf]
[--naming blink|fla|transformers] [--vocab FILE|bytes|none]`.

Argument parsing, a per-tensor progress bar and one call to `convert.convert`. An expected error
(a bad or unsafe checkpoint, a path that cannot be written) is one `error: ...` line and exit
code 1; a bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from convert.keymap import NAMINGS
from convert.pipeline import convert
from rwkv_jax.atomic import error_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convert",
        description="Official RWKV-7 .pth / safetensors (any naming) -> rwkv_jax checkpoint, or back "
        "(when IN is an rwkv_jax checkpoint: OUT ending in .pth gives .pth, in .safetensors one "
        "safetensors file, else a HF directory).",
    )
    parser.add_argument("src", metavar="IN")
    parser.add_argument("dst", metavar="OUT")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "int8", "bf16-weights"],
                        help="default: the input's dtype; int8 and bf16-weights (imports) store the matrices "
                        "weight-only quantized, for batch-1 decode (rwkv_jax.quant)")
    parser.add_argument("--format", choices=["auto", "pth", "hf"], default="auto",
                        help="format of the official side (default: from the path)")
    parser.add_argument("--naming", choices=list(NAMINGS),
                        help="tensor names of an export (default: blink for .pth, else fla)")
    parser.add_argument("--vocab", metavar="FILE|bytes|none",
                        help="vocab file (format: rwkv_jax/tokenizer.py), 'bytes' (id = byte value) "
                        "or 'none' (token ids only); default: RWKV World")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)

    bar = tqdm(unit="tensor", desc="converting", leave=True)

    def on_tensor(name: str, index: int, count: int) -> None:
        bar.total = count
        bar.set_postfix_str(name, refresh=False)
        bar.update(1)

    try:
        out = convert(args.src, args.dst, dtype=args.dtype, format=args.format, naming=args.naming,
                      vocab=args.vocab, overwrite=args.overwrite, on_tensor=on_tensor)
    except (ValueError, OSError) as e:  # ConvertError, a damaged rwkv_jax checkpoint, a path
        bar.close()
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    bar.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
