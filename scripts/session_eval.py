"""Many-edit sessions through the model: unedited recall per fact count, then each method's
reliability, retention, locality, reverts and erases per number of actions, as markdown tables with
95% Wilson intervals.

    python scripts/session_eval.py --model rime-tiny --split session_test --methods none,delta,in_context
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import convert
import rime
from rime.eval.evaluate import DEFAULT_BATCH, Evaluator
from rime.eval.protocol import Spec, parse_method
from rime.eval.sessions import SessionEvaluator, method_table, recall_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="rime-tiny")
    p.add_argument("--split", default="session_test", help="a bundled session split or a JSONL file of sessions")
    p.add_argument("--methods", default="none,delta,in_context", help="comma-separated method specs")
    p.add_argument("--facts", default="", help="only sessions with these fact counts (comma-separated)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    p.add_argument("--rows", help="also write every row to this JSONL file")
    args = p.parse_args()

    sessions = [s for s in rime.load(args.split) if isinstance(s, rime.Session)]
    if args.facts:
        wanted = {int(f) for f in args.facts.split(",")}
        sessions = [s for s in sessions if len(s.facts) in wanted]
    model = convert.load(args.model)
    evaluator = Evaluator(model, Spec.build([]), batch_size=args.batch_size)
    rows = []
    for spec in args.methods.split(","):
        method = parse_method(spec)
        for group in SessionEvaluator(evaluator, method).run(sessions):
            rows += group
        print(f"{method.label}: {sum(1 for r in rows if r['method'] == method.label)} rows", flush=True)
    if args.rows:
        Path(args.rows).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if any(r["method"] == "none" for r in rows):
        print("\n" + recall_table(rows))
    print("\n" + method_table(rows))


if __name__ == "__main__":
    main()
