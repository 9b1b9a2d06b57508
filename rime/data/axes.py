"""The RIME control axes, the paper's exclusion rules, and the dev split's difficulty strata.

A cell is one point of the axis grid. Target position is not part of a cell: its range depends on the
distractor count, so the sampler balances it separately once a cell is chosen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

AXES: dict[str, tuple] = {
    "distractor_count": (0, 2, 4),
    "overwrite_count": (0, 1, 2),
    "composition_hop": (False, True),
    "multi_prop_count": (1, 2, 3),
    "stack_depth": (1, 2, 3),
    "conflict_marker": ("none", "explicit"),
    "recipient_richness": ("bare", "narrative"),
    "edit_style": ("canonical_bare", "template_short", "narrative"),
}
# What a probe query asks about, the cut the blast-radius analysis reports per kind.
PROBE_KINDS = ("other_entity", "same_entity", "same_value_distractor")


class Cell(NamedTuple):
    """One admissible combination of axis values (field order matches `AXES`)."""

    distractor_count: int
    overwrite_count: int
    composition_hop: bool
    multi_prop_count: int
    stack_depth: int
    conflict_marker: str
    recipient_richness: str
    edit_style: str


@dataclass(frozen=True)
class Exclusion:
    """A domain rule from the paper: `applies(params)` is true when a case breaks it."""

    rule: str
    applies: Callable[[Any], bool]


EXCLUSIONS = (
    Exclusion("composition is incompatible with overwrites",
              lambda p: p.composition_hop and p.overwrite_count > 0),
    Exclusion("composition is incompatible with multi-property edits",
              lambda p: p.composition_hop and p.multi_prop_count > 1),
    Exclusion("composition is incompatible with stacking",
              lambda p: p.composition_hop and p.stack_depth > 1),
    Exclusion("conflict markers are incompatible with overwrites",
              lambda p: p.conflict_marker == "explicit" and p.overwrite_count > 0),
    Exclusion("conflict markers are incompatible with composition",
              lambda p: p.conflict_marker == "explicit" and p.composition_hop),
)


def violations(params: Any) -> list[str]:
    """The exclusion rules that `params` (a `Cell` or `Controls`) breaks."""
    return [exclusion.rule for exclusion in EXCLUSIONS if exclusion.applies(params)]


def all_cells() -> list[Cell]:
    return [Cell(*values) for values in itertools.product(*AXES.values())]


def admissible_cells() -> list[Cell]:
    return [cell for cell in all_cells() if not violations(cell)]


def grid_size() -> tuple[int, int]:
    """(cells in the full grid, cells left after the exclusions)."""
    return len(all_cells()), len(admissible_cells())


def difficulty(params: Any) -> str:
    """easy / medium / hard by how many structural complications a case has (overwrites, one-hop
    composition, multi-property edit, stacking); distractors are the other stratification axis."""
    hard = (params.overwrite_count > 0, params.composition_hop, params.multi_prop_count > 1,
            params.stack_depth > 1)
    return ("easy", "medium", "hard")[min(sum(hard), 2)]


def stratum(params: Any) -> tuple[str, bool]:
    """The dev split's strata: (difficulty, has distractors)."""
    return difficulty(params), params.distractor_count > 0
