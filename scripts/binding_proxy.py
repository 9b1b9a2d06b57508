"""A fast first-token proxy of the RIME edit metrics, for tuning edit methods on the dev split.

    python scripts/binding_proxy.py --methods delta,addressed,addressed:protect=4 --limit 60

Per case, every edit step is applied to the recipient state (as `rime run` does, ft=0), then one
forward pass per question scores its answer's first token instead of a generated answer:
- edit: the new value's first token beats the old one's, over the target's questions;
- wrong: the same with every edit calibrated on the case's `wrong_entity` (specificity = edit - wrong);
- probes: the probe's expected first token is the argmax (the unedited model's rate is the floor);
- old: the target's questions still answered with the old value's first token (erase wants 0);
- bleed: same-value distractor probes answered with the new value's first token.
Multi-step cases (stacked or multi-property) are reported apart as `probes 2+`.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import rime
import rwkv_jax
from editing.calibration import read
from rime.eval import protocol
from rwkv_jax.chat import chat_prompt


def edited(method, model, cases, states, entity: bool):
    plans = [[e for step in protocol.case_edits(c, c.wrong_entity if entity else None) for e in step]
             for c in cases]
    for i in range(max(map(len, plans))):
        rows = [c for c, plan in enumerate(plans) if i < len(plan)]
        sub = jax.tree.map(lambda x, rows=rows: x[np.array(rows)], states)
        out = method.apply_many(sub, model, [plans[c][i] for c in rows])
        states = jax.tree.map(lambda x, y, rows=rows: x.at[np.array(rows)].set(y), states, out)
    return states


def first(model, text: str) -> int:
    return model.tokenizer.encode(" " + text)[0]


def scores(model, cases, states):
    """Per question row: (case index, kind, argmax token, logit of new, old, expected)."""
    rows = [(i, q) for i, c in enumerate(cases) for q in protocol.questions(c)]
    prompts = [chat_prompt([("user", q.text)]) for _, q in rows]
    picked = jax.tree.map(lambda x: x[np.array([i for i, _ in rows])], states)
    logits = np.asarray(read(model.params, model.cfg, model.tokenizer, prompts, picked)[0])
    out = []
    for (i, q), lg in zip(rows, logits, strict=True):
        out.append((i, q.kind, int(lg.argmax()), lg[first(model, q.new[0])], lg[first(model, q.old[0])],
                    first(model, q.expected[0])))
    return out


def summary(model, cases, method, states):
    multi = np.array([len([e for s in protocol.case_edits(c) for e in s]) > 1 for c in cases])
    target = scores(model, cases, edited(method, model, cases, states, False))
    wrong = scores(model, cases, edited(method, model, cases, states, True))
    edit = np.mean([n > o for _, k, _, n, o, _ in target if k == "edit"])
    wr = np.mean([n > o for _, k, _, n, o, _ in wrong if k == "edit"])
    probes = [(i, a == e) for i, k, a, _, _, e in target if k not in ("edit", "joint")]
    p1 = np.mean([ok for i, ok in probes if not multi[i]])
    p2 = np.mean([ok for i, ok in probes if multi[i]]) if multi.any() else float("nan")
    def bleed(rows):
        hits = [a == first(model, cases[i].value_new) for i, k, a, *_ in rows if k == "same_value_distractor"]
        return np.mean(hits) if hits else float("nan")

    old = np.mean([a == first(model, cases[i].value_old) for i, k, a, *_ in target if k == "edit"])
    return edit, wr, edit - wr, p1, p2, bleed(target), bleed(wrong), old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="none,delta,addressed")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=60)
    args = ap.parse_args()
    model = rwkv_jax.load("rime-tiny")
    cases = rime.load(args.split)[: args.limit]
    states = read(model.params, model.cfg, model.tokenizer, [protocol.recipient_text(c) for c in cases])[1]
    # retention filter: the unedited model prefers the old value on most target questions
    base = scores(model, cases, states)
    keep = [i for i in range(len(cases))
            if np.mean([o > n for j, k, _, n, o, _ in base if j == i and k == "edit"]) > 0.5]
    cases = [cases[i] for i in keep]
    states = jax.tree.map(lambda x: x[np.array(keep)], states)
    print(f"{len(cases)} cases retained\n| method | edit | wrong | spec | probes 1 | probes 2+ | bleed | "
          "wrong bleed | old | s |\n|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.methods.split(","):
        method = protocol.parse_method(spec)
        t = time.time()
        row = summary(model, cases, method, states)
        print(f"| {spec} | " + " | ".join(f"{100 * x:.1f}" for x in row) + f" | {time.time() - t:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
