"""How well `editing.scoped` routes: for each case's one edit, the share of its target questions
routed to the edited state, and of its probe questions (by kind), per block and threshold.

    python scripts/scoped_routing.py [--model rime-tiny] [--split dev] [--limit 40]

Routing keys come from the method's own questions (`editing.keys.question`); the benchmark's
queries and probes are only what is routed. Prints a markdown table with Wilson 95% intervals.
"""

from __future__ import annotations

import argparse

import numpy as np

import convert
import rime
from editing import scoped
from editing.calibration import read
from rime.eval import protocol
from rime.eval.analysis import Rate
from rwkv_jax.batch import take
from rwkv_jax.chat import chat_prompt

THRESHOLDS = (0.3, 0.5, 0.7)
KINDS = ("target", "same_entity", "other_entity", "same_value_distractor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=40)
    args = ap.parse_args()
    model = convert.load(args.model)
    cases = rime.load(args.split)[: args.limit]
    edits = [protocol.case_edits(c)[0][0] for c in cases]
    _, states = read(model.params, model.cfg, model.tokenizer, [protocol.recipient_text(c) for c in cases])
    prompts, rows, kinds = [], [], []
    for i, case in enumerate(cases):
        asked = [(q, "target") for q in case.queries] + [(p.query, p.kind) for p in case.probe_queries]
        prompts += [chat_prompt([("user", q)]) for q, _ in asked]
        rows += [i] * len(asked)
        kinds += [k for _, k in asked]
    kinds = np.array(kinds)
    print(f"{len(cases)} cases of {args.split}, model {args.model}: share of questions routed to the edit\n")
    print("| block | threshold | " + " | ".join(KINDS) + " |")
    print("|---|---|" + "---|" * len(KINDS))
    for layer in range(1, model.cfg.n_layer + 1):
        scope = scoped.scope(states, model, edits, layer=layer)
        _, sim = scoped.route(scope, model, prompts, take(states, np.array(rows)))
        own = np.asarray(sim)[np.arange(len(prompts)), rows]  # each question against its case's edit
        for threshold in THRESHOLDS:
            routed = own > threshold
            cells = [str(Rate(int(routed[kinds == k].sum()), int((kinds == k).sum()))) for k in KINDS]
            print(f"| {layer} | {threshold} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
