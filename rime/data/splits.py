"""Chooses which cells of the axis grid the splits cover, and builds the splits.

The grid has far more admissible cells than a split has cases, so the sampler balances the one-way
marginals instead of the joint: each case takes the admissible cell whose axis values have been used
least so far (the sum of the per-axis counts), ties broken at random (the paper's greedy rule). Cells
may repeat. Exclusions tie some axis values together (every one-hop case has no overwrites), so those
marginals cannot all be flat; values that can stand in for each other in every admissible cell are
balanced to within one case.

The dev split also stratifies: cases cycle through the (difficulty x has-distractors) strata, and the
target's position is balanced within each stratum. In both splits the property is the least used one
that the cell allows (composition needs a property with a one-hop map).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence

from rime.data.axes import AXES, Cell, admissible_cells, grid_size, stratum
from rime.data.cases import make_case
from rime.data.content import content
from rime.data.schema import Case, Record, Session
from rime.data.sessions import session_marginals

DEFAULT_SEED = 0
TEST_SIZE = 215
DEV_SIZE = 150
MARGINAL_AXES = (*AXES, "target_position")


def least_used(rng: random.Random, options: Iterable[Hashable], counts: Counter) -> Hashable:
    """The option used least so far (random among ties); counts it."""
    options = list(options)
    fewest = min(counts[o] for o in options)
    choice = rng.choice([o for o in options if counts[o] == fewest])
    counts[choice] += 1
    return choice


def greedy_cells(rng: random.Random, n: int, pools: Sequence[Sequence[Cell]]) -> list[Cell]:
    """n cells by the greedy marginal rule, the i-th drawn from pool i mod len(pools); the axis counts
    are shared across pools."""
    counts = {axis: Counter() for axis in AXES}
    cells = []
    for i in range(n):
        pool = pools[i % len(pools)]
        scores = [sum(counts[axis][value] for axis, value in zip(AXES, cell)) for cell in pool]
        best = min(scores)
        cell = rng.choice([cell for cell, score in zip(pool, scores) if score == best])
        for axis, value in zip(AXES, cell):
            counts[axis][value] += 1
        cells.append(cell)
    return cells


def strata_pools() -> list[list[Cell]]:
    """The admissible cells grouped by dev stratum, in a fixed order."""
    pools = defaultdict(list)
    for cell in admissible_cells():
        pools[stratum(cell)].append(cell)
    return [pools[key] for key in sorted(pools)]


def build_split(split: str, seed: int, size: int, stratified: bool) -> list[Case]:
    """`size` cases for `split`, deterministic in (split, seed)."""
    rng = random.Random(f"rime:{seed}:{split}")
    cells = greedy_cells(rng, size, strata_pools() if stratified else [admissible_cells()])
    c = content()
    positions, properties = defaultdict(Counter), Counter()
    cases = []
    for i, cell in enumerate(cells):
        key = (stratum(cell) if stratified else None, cell.distractor_count)
        position = least_used(rng, range(cell.distractor_count + 1), positions[key])
        prop = least_used(rng, c.hop_properties() if cell.composition_hop else c.properties, properties)
        cases.append(make_case(rng, cell, position, prop, f"{split}-{i:03d}", split))
    return cases


def build_splits(seed: int = DEFAULT_SEED, test_size: int = TEST_SIZE, dev_size: int = DEV_SIZE
                 ) -> dict[str, list[Case]]:
    """The benchmark: a marginal-balanced test split and a stratified dev split."""
    return {"test": build_split("test", seed, test_size, stratified=False),
            "dev": build_split("dev", seed, dev_size, stratified=True)}


def marginals(cases: Iterable[Case]) -> dict[str, dict]:
    """Cases per value of every axis and of target position, values in sorted order."""
    counts = {axis: Counter() for axis in MARGINAL_AXES}
    for case in cases:
        for axis in MARGINAL_AXES:
            counts[axis][case.params.to_dict()[axis]] += 1
    return {axis: dict(sorted(counter.items())) for axis, counter in counts.items()}


def summary(splits: dict[str, list[Record]]) -> dict:
    """What `build` reports: the grid size and every split's size and marginals (a session split's by
    size and action, `rime.data.sessions.session_marginals`)."""
    total, admissible = grid_size()

    def of(cases: list[Record]) -> dict:
        return session_marginals(cases) if cases and isinstance(cases[0], Session) else marginals(cases)

    return {"grid": {"cells": total, "admissible": admissible},
            "splits": {name: {"size": len(cases), "marginals": of(cases)} for name, cases in splits.items()}}
