"""Does a model bind values to people? A one-minute check to run on training checkpoints.

    python scripts/binding_probe.py --model runs/NAME-export
    python scripts/binding_probe.py --model runs/NAME-export --passage roster --ask recital

Each trial states one property for k people (k = 2..5, distinct values, bare facts in the
benchmark's templates), then asks about one of them, drawn uniformly. A model that reads the value
of the most recent or most prominent holder scores about 1/k; one that binds values to names
scores near 1. Prints, per k, the greedy answer's accuracy, the chance rate and the share of
answers that give the last-stated value instead.

`--passage roster` states the facts as a roster (each value right after its name) and `--ask
recital` asks for everyone's value with the asked person first, scoring the reply's first item:
the easier forms of `rime.data.corpus.Mix`, to see which stage of binding a run has reached.
"""

from __future__ import annotations

import argparse
import random

import numpy as np

import convert
import rwkv_jax
from rime.data.content import content
from rime.data.sentences import fact, query, recital_query, roster
from rime.data.turns import acknowledgement


def trials(rng: random.Random, n: int, passage_form: str = "sentences",
           ask: str = "question") -> list[tuple[str, str, str, int]]:
    """(prompt, expected reply start, reply start if it gave the last-stated value, k) for `n`
    random trials."""
    c, out = content(), []
    for _ in range(n):
        k = rng.randint(2, 5)
        prop = c.properties[rng.choice(list(c.properties))]
        names, values = rng.sample(c.names, k), rng.sample(prop.values, k)
        if passage_form == "roster":
            passage = roster(prop, list(zip(names, values)))
        else:
            passage = " ".join(fact(rng, prop, name, value) for name, value in zip(names, values))
        asked = rng.randrange(k)
        if ask == "recital":
            order = [names[asked], *rng.sample([m for m in names if m != names[asked]], k - 1)]
            question, lead = recital_query(prop, order), f"{names[asked]} "
        else:
            question, lead = query(rng, prop, names[asked]), ""
        messages = [("user", passage), ("assistant", acknowledgement()), ("user", question)]
        out.append((rwkv_jax.chat_prompt(messages), lead + values[asked], lead + values[-1], k))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rime-tiny")
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--passage", choices=("sentences", "roster"), default="sentences")
    ap.add_argument("--ask", choices=("question", "recital"), default="question")
    args = ap.parse_args()

    model = convert.load(args.model)
    cases = trials(random.Random(args.seed), args.trials, args.passage, args.ask)
    replies = rwkv_jax.generate(model, [prompt for prompt, *_ in cases], max_new_tokens=12).texts
    print("| people | trials | accuracy | chance | answers the last-stated value |\n|---|---|---|---|---|")
    for k in range(2, 6):
        rows = [(r.strip(), asked, last) for r, (_, asked, last, n) in zip(replies, cases) if n == k]
        right = np.mean([reply.startswith(asked) for reply, asked, _ in rows])
        recent = np.mean([reply.startswith(last) for reply, _, last in rows])
        print(f"| {k} | {len(rows)} | {right:.1%} | {1 / k:.1%} | {recent:.1%} |")


if __name__ == "__main__":
    main()
