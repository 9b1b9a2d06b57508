"""Causal state transplant (paper §3, Table 1): P(old) after moving layer ranges of B's state
into A's, as a markdown table.

    python scripts/transplant_table.py --model <anything convert.load accepts>
    python scripts/transplant_table.py --model rime-tiny --facts rime
    python scripts/transplant_table.py --random-tiny    # runs end to end; numbers meaningless
"""

from __future__ import annotations

import argparse

import convert
import rwkv_jax
from editing.causal import FACT_SETS, FLIPPED, transplant_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a bundled model name or checkpoint directory")
    source.add_argument("--random-tiny", action="store_true",
                        help="a random 4-layer model with the World tokenizer (smoke test)")
    parser.add_argument("--facts", choices=sorted(FACT_SETS), default="generic",
                        help="fact pairs: generic English, or the RIME corpus phrasing (for rime-tiny)")
    args = parser.parse_args(argv)

    if args.random_tiny:
        model = rwkv_jax.random_model(n_layer=4, n_embd=128, tokenizer=rwkv_jax.world_tokenizer())
        print("NOTE: random weights. These numbers are meaningless; only the mechanics run.\n")
    else:
        model = convert.load(args.model)
    table = transplant_table(model.params, model.cfg, model.tokenizer, FACT_SETS[args.facts])
    print(f"P(old) after transplanting layers of B's state into A's "
          f"(L={model.cfg.n_layer}); bold: flipped, P(new) > {FLIPPED}.\n")
    print(table.to_markdown())


if __name__ == "__main__":
    main()
