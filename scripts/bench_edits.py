"""Cost of each edit method: milliseconds per edit when a group of cases is edited at once.

    python scripts/bench_edits.py --methods delta,in_context,addressed,erase --batch 64

Reads the recipients of the first `--batch` cases of the split once, then times
`method.apply_many(states, model, edits)` (one edit per case, the text encoding included) after
one warm-up call that compiles; prints the best of `--repeat` runs, per edit and per batch.
"""

from __future__ import annotations

import argparse
import time

import jax

import convert
import rime
from editing.calibration import read
from rime.eval import protocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="delta,in_context,addressed,erase")
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    model = convert.load(args.model)
    cases = rime.load(args.split)[: args.batch]
    edits = [protocol.case_edits(c)[0][0] for c in cases]
    states = read(model.params, model.cfg, model.tokenizer, [protocol.recipient_text(c) for c in cases])[1]
    print(f"{jax.devices()[0].platform}, batch {len(cases)}\n| method | ms per edit | ms per batch |\n|---|---|---|")
    for spec in args.methods.split(","):
        method = protocol.parse_method(spec)
        jax.block_until_ready(method.apply_many(states, model, edits))
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            jax.block_until_ready(method.apply_many(states, model, edits))
            best = min(best, time.perf_counter() - start)
        print(f"| `{spec}` | {1e3 * best / len(cases):.2f} | {1e3 * best:.0f} |", flush=True)


if __name__ == "__main__":
    main()
