"""How well `editing.scoped` routes, per block and threshold. On single cases: for each case's one
edit, the share of its target questions routed to the edited state, and of its probe questions (by
kind). On sessions: every query against the keys of its session's actions in effect, read from the
session's unedited state, as the scoped session evaluator routes them: precision, recall and how
many questions about untouched facts route.

    python scripts/scoped_routing.py [--model rime-tiny] [--split dev] [--limit 40]
    python scripts/scoped_routing.py --split session_dev

Routing keys come from the method's own questions (`editing.keys.question`); the benchmark's
queries and probes are only what is routed. Prints a markdown table with Wilson 95% intervals.
"""

from __future__ import annotations

import argparse

import numpy as np

import convert
import rime
from editing import get_method, scoped
from editing.calibration import read
from rime.eval import protocol
from rime.eval.analysis import Rate
from rime.eval.evaluate import Evaluator
from rime.eval.protocol import Spec, question_prompt
from rime.eval.sessions import ROUTED_ROLES, SessionEvaluator, questions
from rwkv_jax.batch import concat, take
from rwkv_jax.chat import chat_prompt

THRESHOLDS = (0.5, 0.6, 0.7, 0.8)
KINDS = ("target", "same_entity", "other_entity", "same_value_distractor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=None, help="only the first N cases or sessions (cases: 40)")
    args = ap.parse_args()
    model = convert.load(args.model)
    if args.split.startswith("session"):
        sessions_table(model, rime.load(args.split)[: args.limit])
    else:
        cases_table(model, args.split, 40 if args.limit is None else args.limit)


def cases_table(model, split: str, limit: int) -> None:
    cases = rime.load(split)[:limit]
    edits = [protocol.case_edits(c)[0][0] for c in cases]
    _, states = read(model.params, model.cfg, model.tokenizer, [protocol.recipient_text(c) for c in cases])
    prompts, rows, kinds = [], [], []
    for i, case in enumerate(cases):
        asked = [(q, "target") for q in case.queries] + [(p.query, p.kind) for p in case.probe_queries]
        prompts += [chat_prompt([("user", q)]) for q, _ in asked]
        rows += [i] * len(asked)
        kinds += [k for _, k in asked]
    kinds = np.array(kinds)
    print(f"{len(cases)} cases of {split}: share of questions routed to the edit\n")
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


def sessions_table(model, sessions) -> None:
    runner = SessionEvaluator(Evaluator(model, Spec(methods=(get_method("none"),))), get_method("none"))
    size = runner.evaluator.group_size
    unedited = concat([runner.final_states(sessions[i:i + size], acting=False) for i in range(0, len(sessions), size)])
    prompts, asked, wanted, untouched = [], [], [], []
    for g, session in enumerate(sessions):
        for q in questions(session):
            prompts.append(question_prompt(q))
            asked.append(g)
            wanted.append(q.kind in ROUTED_ROLES)
            untouched.append(q.kind == "locality")
    wanted, untouched = np.array(wanted), np.array(untouched)
    print(f"{len(sessions)} sessions, {int(wanted.sum())} questions about a change in effect, "
          f"{int(untouched.sum())} about untouched facts\n")
    print("| block | threshold | routing precision | routing recall | untouched facts routed |")
    print("|---|---|---|---|---|")
    for layer in range(1, model.cfg.n_layer + 1):
        best = runner.similarity(sessions, prompts, asked, unedited, layer=layer).max(axis=-1, initial=-np.inf)
        for threshold in THRESHOLDS:
            routed = best > threshold
            hits = int((routed & wanted).sum())
            print(f"| {layer} | {threshold} | {Rate(hits, int(routed.sum()))} | {Rate(hits, int(wanted.sum()))} | "
                  f"{int((routed & untouched).sum())} of {int(untouched.sum())} |")


if __name__ == "__main__":
    main()
