"""Checkpoint averaging: the element-wise mean of the params of models of one shape and vocab.

    python scripts/average_models.py runs/rime-tiny-6 runs/rime-tiny-7 --out rwkv_jax/models/rime-tiny

Points of one training trajectory averaged land between them, often where every measure is at
least as good as at either end. The vocab (and a compact vocab's `world_ids.json`) is the first
model's; every model must have the same config and vocab.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
from train import export  # scripts/train.py

import rwkv_jax
from rwkv_jax.checkpoint import resolve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="models to average (paths or bundled names)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give at least two models")
    models = [rwkv_jax.load(m) for m in args.models]
    first = models[0]
    for name, m in zip(args.models[1:], models[1:]):
        if m.cfg != first.cfg or m.tokenizer.id_to_bytes != first.tokenizer.id_to_bytes:
            raise SystemExit(f"{name} differs from {args.models[0]} in config or vocab; only like models average")
    mean = jax.tree.map(lambda *xs: sum(xs) / len(xs), *(m.params for m in models))
    export(args.out, mean, first.cfg, first.tokenizer, resolve(args.models[0]))


if __name__ == "__main__":
    main()
