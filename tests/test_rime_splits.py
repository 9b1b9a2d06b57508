"""The splits: grid size, the paper's greedy marginal balancing, dev stratification, determinism."""

import itertools
from collections import Counter, defaultdict

import pytest

import rime

AXIS_VALUES = {
    "distractor_count": (0, 2, 4), "overwrite_count": (0, 1, 2), "composition_hop": (False, True),
    "multi_prop_count": (1, 2, 3), "stack_depth": (1, 2, 3), "conflict_marker": ("none", "explicit"),
    "recipient_richness": ("bare", "narrative"),
    "edit_style": ("canonical_bare", "template_short", "narrative"),
}


def admissible(cell):
    hop, ow, mp, st, conflict = (cell["composition_hop"], cell["overwrite_count"], cell["multi_prop_count"],
                                 cell["stack_depth"], cell["conflict_marker"] == "explicit")
    return not (hop and (ow or mp > 1 or st > 1)) and not (conflict and (ow or hop))


GRID = [dict(zip(AXIS_VALUES, values)) for values in itertools.product(*AXIS_VALUES.values())]
ADMISSIBLE = [cell for cell in GRID if admissible(cell)]


def interchangeable(axis, a, b):
    """Whether swapping value a for b (and back) keeps every admissible cell admissible."""
    for cell in ADMISSIBLE:
        if cell[axis] in (a, b) and not admissible({**cell, axis: b if cell[axis] == a else a}):
            return False
    return True


@pytest.fixture(scope="module")
def splits():
    return rime.build_splits()


def test_grid_size_matches_the_exclusion_rules():
    assert rime.grid_size() == (len(GRID), len(ADMISSIBLE))
    assert {tuple(c) for c in rime.admissible_cells()} == {tuple(c.values()) for c in ADMISSIBLE}


def test_test_split_has_the_papers_size_and_default_dev_size(splits):
    assert len(splits["test"]) == 215
    assert len(splits["dev"]) == rime.DEV_SIZE
    assert len({c.id for s in splits.values() for c in s}) == 215 + rime.DEV_SIZE


@pytest.mark.parametrize("seed", [0, 3])
def test_test_marginals_are_within_one_wherever_values_are_interchangeable(seed):
    cases = rime.build_split("test", seed, 215, stratified=False)
    marginals = rime.marginals(cases)
    balanced = 0
    for axis, values in AXIS_VALUES.items():
        for a, b in itertools.combinations(values, 2):
            if interchangeable(axis, a, b):
                balanced += 1
                assert abs(marginals[axis].get(a, 0) - marginals[axis].get(b, 0)) <= 1, (axis, a, b)
        assert set(marginals[axis]) == set(values)  # every value is used even where it cannot be flat
    assert balanced >= 10  # distractors, richness, style, and the non-zero overwrite/multi/stack values


def test_every_pick_follows_the_greedy_rule(splits):
    counts = {axis: Counter() for axis in AXIS_VALUES}
    for case in splits["test"]:
        def score(cell):
            return sum(counts[axis][cell[axis]] for axis in AXIS_VALUES)

        chosen = {axis: getattr(case.params.cell, axis) for axis in AXIS_VALUES}
        assert score(chosen) == min(score(cell) for cell in ADMISSIBLE), case.id
        for axis in AXIS_VALUES:
            counts[axis][chosen[axis]] += 1


def test_target_position_is_balanced_for_each_entity_count(splits):
    by_count = defaultdict(Counter)
    for case in splits["test"]:
        by_count[case.params.cell.distractor_count][case.params.target_position] += 1
    for count, positions in by_count.items():
        assert set(positions) == set(range(count + 1))
        assert max(positions.values()) - min(positions.values()) <= 1, (count, positions)


def test_dev_split_is_stratified_with_positions_balanced_within_strata(splits):
    def difficulty(p):
        hard = (p.overwrite_count > 0) + p.composition_hop + (p.multi_prop_count > 1) + (p.stack_depth > 1)
        return min(hard, 2)

    strata = Counter((difficulty(c.params.cell), c.params.cell.distractor_count > 0) for c in splits["dev"])
    assert len(strata) == 6 and max(strata.values()) - min(strata.values()) <= 1
    within = defaultdict(Counter)
    for case in splits["dev"]:
        p = case.params.cell
        within[difficulty(p), p.distractor_count][case.params.target_position] += 1
    for (_, count), positions in within.items():
        full = Counter({position: positions[position] for position in range(count + 1)})
        assert max(full.values()) - min(full.values()) <= 1, positions


def test_properties_are_spread_evenly(splits):
    used = Counter(case.property for case in splits["test"])
    assert set(used) == set(rime.content().properties)
    assert max(used.values()) - min(used.values()) <= 12


def test_same_seed_same_splits_and_other_seeds_differ():
    def records(splits):
        return {name: [c.to_dict() for c in cases] for name, cases in splits.items()}

    a = records(rime.build_splits(seed=5, test_size=40, dev_size=24))
    assert a == records(rime.build_splits(seed=5, test_size=40, dev_size=24))
    b = records(rime.build_splits(seed=6, test_size=40, dev_size=24))
    for name in a:
        differing = sum(x != y for x, y in zip(a[name], b[name]))
        assert differing == len(a[name])
    assert {c["recipient"]["passages"][0] for c in a["test"]}.isdisjoint(
        c["recipient"]["passages"][0] for c in a["dev"])


def test_summary_reports_grid_and_marginals(splits):
    report = rime.summary(splits)
    assert report["grid"] == {"cells": len(GRID), "admissible": len(ADMISSIBLE)}
    assert report["splits"]["test"]["size"] == 215
    assert sum(report["splits"]["test"]["marginals"]["edit_style"].values()) == 215
