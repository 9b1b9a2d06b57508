"""How much of the state two sparse edits share: the support overlap of the `delta` of pairs of
different cases, per fraction kept, next to what two random supports of that size share.

    python scripts/sparse_overlap.py [--model rime-tiny] [--split dev] [--pairs 64]

Prints a markdown table: fraction, mode, mean overlap [min, max] over the pairs, and the chance
level (the fraction itself, for entries; the share of heads kept, for heads).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import convert
import rime
from editing import get_method, overlap, support
from rime.eval.protocol import case_edits
from rwkv_jax.batch import take

FRACTIONS = (0.01, 0.03, 0.1, 0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--pairs", type=int, default=64)
    args = ap.parse_args()
    model = convert.load(args.model)
    edits = [case_edits(c)[0][0] for c in rime.load(args.split)[: 2 * args.pairs]]
    deltas = get_method("delta").deltas(model, edits)
    print(f"{args.pairs} pairs of different cases' deltas, {args.split} split, model {args.model}\n")
    print("| fraction | by | overlap mean | min | max | chance |")
    print("|---|---|---|---|---|---|")
    for by in ("entries", "heads"):
        for fraction in FRACTIONS:
            masks = support(deltas, fraction, by)
            shares = [float(overlap(take(masks, 2 * i), take(masks, 2 * i + 1))) for i in range(args.pairs)]
            chance = fraction if by == "entries" else math.ceil(fraction * model.cfg.n_head) / model.cfg.n_head
            print(f"| {fraction} | {by} | {np.mean(shares):.3f} | {min(shares):.3f} | {max(shares):.3f} | "
                  f"{chance:.3f} |")


if __name__ == "__main__":
    main()
