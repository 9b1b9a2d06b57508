"""Writes many-edit sessions, and the `session_test` / `session_dev` splits.

A session states `F` facts about `P` people (F / P properties each, one passage per person; some
people share a value on purpose), then applies `K` actions to different facts one after another,
each followed by 0-2 neutral filler exchanges that mention no name or value of the session. From
K = 2 on, the first two edits hit the same person; from K = 4 on, one action reverts an earlier
edit (two from K = 16), and from K = 8 on one erases a fact nobody edited. Every fact is asked once
after the last action, with the role and answer `rime.data.ledger.answer_key` gives it.
"""

from __future__ import annotations

import random
from collections import Counter

from rime.data.axes import AXES
from rime.data.checks import SESSION_MAX_FILLERS, related
from rime.data.content import content
from rime.data.ledger import answer_key
from rime.data.schema import CalibrationPair, Fact, Session, SessionEdit, SessionQuery
from rime.data.sentences import edit_pair, edit_writer, fact, query
from rime.data.turns import avoiding

FACT_COUNTS = (6, 8, 12, 16, 24)
EDIT_COUNTS = (1, 2, 4, 8, 16)
PEOPLE = {6: 3, 8: 4, 12: 4, 16: 8, 24: 8}  # people per fact count: two or three properties each
SHARE_RATE = 0.3  # how often a person takes a value someone already holds for the property
SESSIONS_PER_CELL = {"session_test": 6, "session_dev": 3}


def cells() -> list[tuple[int, int]]:
    """The (facts, actions) sizes a split covers: every pair with no more actions than facts."""
    return [(f, k) for f in FACT_COUNTS for k in EDIT_COUNTS if k <= f]


def action_counts(n_actions: int) -> dict[str, int]:
    """How many of a session's actions are reverts, erases and plain edits."""
    reverts = (n_actions >= 4) + (n_actions >= 16)
    erases = int(n_actions >= 8)
    return {"edit": n_actions - reverts - erases, "revert": reverts, "erase": erases}


def _facts(rng: random.Random, names: list[str], per_person: int) -> list[Fact]:
    c = content()
    held: dict[str, list[str]] = {}  # property -> values held so far
    facts = []
    for name in names:
        for key in rng.sample(list(c.properties), per_person):
            taken = held.setdefault(key, [])
            fresh = [v for v in c.properties[key].values if not any(related(v, t) for t in taken)]
            value = rng.choice(taken) if taken and rng.random() < SHARE_RATE else rng.choice(fresh)
            taken.append(value)
            facts.append(Fact(name, key, value))
    return facts


def _targets(rng: random.Random, facts: list[Fact], n: int) -> list[Fact]:
    """n distinct facts to act on; with two or more, the first two are about the same person."""
    if n < 2:
        return rng.sample(facts, n)
    first = rng.choice(facts)
    second = rng.choice([f for f in facts if f.entity == first.entity and f != first])
    rest = [f for f in facts if f not in (first, second)]
    return [first, second, *rng.sample(rest, n - 2)]


def _plan(rng: random.Random, facts: list[Fact], n_actions: int) -> list[tuple[str, Fact, int | None]]:
    """The actions in order as (action, fact, index of the reverted action)."""
    counts = action_counts(n_actions)
    targets = _targets(rng, facts, counts["edit"] + counts["erase"])
    edited, erased = targets[:counts["edit"]], targets[counts["edit"]:]
    order = [("edit", f) for f in edited]
    rng.shuffle(order)
    plan: list[tuple[str, Fact, int | None]] = [(a, f, None) for a, f in order]
    for f in erased:
        plan.insert(rng.randint(0, len(plan)), ("erase", f, None))
    for f in rng.sample(edited, counts["revert"]):
        at = next(i for i, (a, g, _) in enumerate(plan) if a == "edit" and g == f)
        plan.insert(rng.randint(at + 1, len(plan)), ("revert", f, -1))
    # a revert's index is known once every insertion is done
    return [(a, f, next(i for i, (b, g, _) in enumerate(plan) if b == "edit" and g == f) if a == "revert" else None)
            for a, f, _ in plan]


def make_session(rng: random.Random, n_facts: int, n_people: int, n_actions: int, session_id: str,
                 split: str) -> Session:
    """One session of `n_facts` facts about `n_people` people and `n_actions` actions."""
    if n_facts % n_people or n_facts // n_people < 2:
        raise ValueError(f"{n_facts} facts do not split into two or more properties for each of {n_people} people")
    if not 1 <= n_actions <= n_facts:
        raise ValueError(f"a session of {n_facts} facts takes 1 to {n_facts} actions, got {n_actions}")
    c = content()
    names = rng.sample(c.names, n_people)
    facts = _facts(rng, names, n_facts // n_people)
    passages = tuple(" ".join(fact(rng, c.properties[f.property], f.entity, f.value) for f in facts if f.entity == n)
                     for n in names)

    in_play = {(f.property, f.value) for f in facts}
    values = {f.key: f.value for f in facts}
    plan = _plan(rng, facts, n_actions)
    chosen = []
    for action, target, reverts in plan:
        prop, old = c.properties[target.property], values[target.key]
        if action == "edit":
            new = rng.choice([v for v in prop.values if (prop.key, v) not in in_play and not related(v, old)])
            in_play.add((prop.key, new))
        else:
            new = "" if action == "erase" else chosen[reverts][2]
        chosen.append((action, target, old, new, reverts))
        values[target.key] = new or None

    words = [*names, *(v for _, v in in_play)]
    fillers = avoiding(c.neutral_fillers, words)
    edits = []
    for action, target, old, new, reverts in chosen:
        prop, style = c.properties[target.property], rng.choice(AXES["edit_style"])
        pair = (edit_pair(rng, style, True, prop, target.entity, old, new) if new else
                CalibrationPair(style, edit_writer(rng, style, False, prop)(target.entity, old), ""))
        turns = tuple(rng.sample(fillers, rng.randint(0, SESSION_MAX_FILLERS)))
        edits.append(SessionEdit(action, target.entity, target.property, old, new, pair, reverts, turns))

    key = answer_key(facts, edits)
    queries = tuple(SessionQuery(query(rng, c.properties[f.property], f.entity), f.entity, f.property,
                                 key[f.key][1], key[f.key][0]) for f in facts)
    return Session(session_id, split, tuple(names), tuple(facts), passages, tuple(edits), queries)


def build_session_split(split: str, seed: int, per_cell: int) -> list[Session]:
    """`per_cell` sessions for every (facts, actions) cell, deterministic in (split, seed)."""
    rng = random.Random(f"rime:{seed}:{split}")
    return [make_session(rng, f, PEOPLE[f], k, f"{split}-f{f:02d}-k{k:02d}-{i}", split)
            for f, k in cells() for i in range(per_cell)]


def build_session_splits(seed: int, per_cell: dict[str, int] = SESSIONS_PER_CELL) -> dict[str, list[Session]]:
    """The session splits, `per_cell` sessions per cell for each."""
    return {split: build_session_split(split, seed, n) for split, n in per_cell.items()}


def session_marginals(sessions: list[Session]) -> dict[str, dict]:
    """Sessions per fact count, action count and action kind, values in sorted order."""
    counts = {"facts": Counter(len(s.facts) for s in sessions), "actions": Counter(len(s.edits) for s in sessions),
              "action": Counter(e.action for s in sessions for e in s.edits)}
    return {axis: dict(sorted(counter.items())) for axis, counter in counts.items()}
