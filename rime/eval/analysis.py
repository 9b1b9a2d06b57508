"""A run's rows indexed for the report's cuts: rates with intervals, the retention filter, and
the outcome counts that both the report's tables and its figures read.

Every accuracy uses `correct_stripped` and carries a Wilson 95% interval and its row count. Edit
metrics count only retained cases: those whose unedited model (`none`, ft=0) answers a majority of
the target's paraphrases with the old value. Target specificity is a method's edit accuracy minus
its success when calibrated on the wrong entity, a difference over the same cases with a
case-bootstrap interval; same-value bleed is how often a distractor that holds the old value is
answered with the new one (wrong-entity bleed: the same, for the wrong-entity variant).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from editing import READS
from rime.data.axes import AXES, PROBE_KINDS
from rime.eval.protocol import EDIT, JOINT, NO_FILLER, TARGET, WRONG_ENTITY, edits_applied
from rime.eval.rows import read_config, read_rows
from rime.eval.scoring import bootstrap_difference, wilson

AXIS_NAMES = (*AXES, "target_position")
CLEAN = {"multi_prop_count": 1, "overwrite_count": 0, "distractor_count": 0}
OUTCOMES = ("edit ok, probe ok", "edit ok, probe broken", "edit failed, probe ok", "edit failed, probe broken")
BASELINE = "none"
UNRECORDED = "not recorded"  # run folders written before methods declared what they read
EDIT_COUNTS = {"1 edit": (1, 1), "2 edits": (2, 2), "3-5 edits": (3, 5)}  # bins of `protocol.edits_applied`
# what an erased question is answered with, checked in this order
ANSWERS = {"old value": "old_stripped", "new value": "new_stripped", "another passage value": "others_stripped"}
OTHER_TEXT = "other text"


@dataclasses.dataclass(frozen=True)
class Rate:
    """k successes out of n rows."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def __str__(self) -> str:
        if not self.n:
            return "n/a"
        lo, hi = self.ci
        return f"{100 * self.value:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] n={self.n}"


@dataclasses.dataclass(frozen=True)
class Difference:
    """Rate A minus rate B over the same cases, with a case-bootstrap 95% interval."""

    value: float
    lo: float
    hi: float
    cases: int

    def __str__(self) -> str:
        if math.isnan(self.value):
            return "n/a"
        return f"{100 * self.value:+.1f} pts [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}] n={self.cases} cases"


def rate(rows: Iterable[dict], field: str = "correct_stripped") -> Rate:
    flags = [bool(r[field]) for r in rows]
    return Rate(sum(flags), len(flags))


def majority(rows: Sequence[dict], field: str = "correct_stripped") -> bool:
    return 2 * sum(bool(r[field]) for r in rows) > len(rows)


def difference(a: Sequence[dict], b: Sequence[dict], field_a: str = "correct_stripped",
               field_b: str = "correct_stripped") -> Difference:
    """rate(a, field_a) - rate(b, field_b), resampling the cases the rows come from."""
    cases = sorted({r["case_id"] for r in (*a, *b)})
    where = {case: i for i, case in enumerate(cases)}

    def counts(rows: Sequence[dict], field: str) -> np.ndarray:
        """[C, (successes, rows)]"""
        at = np.array([where[r["case_id"]] for r in rows], np.int64)
        flags = np.array([bool(r[field]) for r in rows], np.int64)
        return np.stack([np.bincount(at, flags, len(cases)), np.bincount(at, minlength=len(cases))], 1)

    return Difference(*bootstrap_difference(counts(a, field_a), counts(b, field_b)), len(cases))


def answered(r: dict) -> str:
    """What an answer holds, the first of `ANSWERS` that it contains, else `OTHER_TEXT`."""
    return next((name for name, field in ANSWERS.items() if r[field]), OTHER_TEXT)


class Analysis:
    """A run's rows, indexed for the report's cuts."""

    def __init__(self, rows: Sequence[dict], config: dict):
        self.config = config
        self.methods: list[str] = config["methods"]
        recorded = config.get("reads", {})
        self.reads = {m: recorded.get(m, UNRECORDED) for m in self.methods}
        self.erasers = [m for m in self.methods if m in config.get("erases", ())]
        # every method judged on the new value it installs (the shams and `none` included)
        self.installers = [m for m in self.methods if m not in self.erasers]
        # those that install a value: the ones with a wrong-entity control
        self.edit_methods = [m for m in self.installers if m in config["wrong_entity"]] or self.installers
        self.settings = [(mode, k) for mode in config["modes"] for k in config["fillers"] if k]
        # the headline's filler column: the fewest filler turns the run measured (1 in the paper's grid)
        self.first_filler = min((k for k in config["fillers"] if k), default=1)
        self.cases = sorted({r["case_id"] for r in rows})
        baseline = defaultdict(list)
        for r in rows:
            if (r["method"], r["variant"], r["filler_turns"], r["kind"]) == (BASELINE, TARGET, 0, EDIT):
                baseline[r["case_id"]].append(r)
        self.baseline = [r for rs in baseline.values() for r in rs]
        self.retained = {case for case, rs in baseline.items() if majority(rs, "old_stripped")}
        self.dropped = sorted(set(self.cases) - self.retained)
        self.index: dict[tuple, list[dict]] = defaultdict(list)
        for r in rows:
            if r["case_id"] in self.retained:
                key = (r["method"], r["variant"], r["filler_mode"], r["filler_turns"], r["kind"])
                self.index[key].append(r)
        self.n_rows = len(rows)
        with_fillers = {r["method"] for r in rows if r["filler_turns"]}
        self.filler_methods = [m for m in self.installers if m in with_fillers]

    def retention(self) -> str:
        return f"{len(self.retained)} of {len(self.cases)} cases retained"

    def unedited_recall(self, overwritten: bool | None = None) -> Rate:
        """How often the unedited model (`none`, ft=0) answers a target question with the old value,
        over every case before the retention filter; `overwritten`: only the cases whose passages
        do (True) or do not (False) replace an earlier value."""
        rows = [r for r in self.baseline
                if overwritten is None or (r["params"]["overwrite_count"] > 0) == overwritten]
        return rate(rows, "old_stripped")

    def groups(self, methods: Sequence[str]) -> list[tuple[str, list[str]]]:
        """`methods` by what they read, in `READS` order, empty groups left out."""
        order = [*READS, UNRECORDED]
        return [(reads, [m for m in methods if self.reads[m] == reads]) for reads in order
                if any(self.reads[m] == reads for m in methods)]

    def rows(self, method: str, kinds: Sequence[str] = (EDIT,), setting: tuple[str, int] = (NO_FILLER, 0),
             variant: str = TARGET) -> list[dict]:
        return [r for kind in kinds for r in self.index[(method, variant, *setting, kind)]]

    def edit(self, method: str, setting: tuple[str, int] = (NO_FILLER, 0), field: str = "correct_stripped") -> Rate:
        return rate(self.rows(method, setting=setting), field)

    def probes(self, method: str) -> Rate:
        return rate(self.rows(method, PROBE_KINDS))

    def joint(self, method: str) -> Rate:
        return rate(self.rows(method, (JOINT,)))

    def old_survives(self, method: str) -> Rate:
        return rate(self.rows(method), "old_stripped")

    def wrong_entity(self, method: str) -> Rate:
        return rate(self.rows(method, variant=WRONG_ENTITY))

    def specificity(self, method: str) -> Difference:
        return difference(self.rows(method), self.rows(method, variant=WRONG_ENTITY))

    def bleed(self, method: str, variant: str = TARGET) -> Rate:
        return rate(self.rows(method, ("same_value_distractor",), variant=variant), "new_stripped")

    def probe_change(self, method: str) -> Difference:
        """Probe preservation minus the unedited model's, on the same cases."""
        return difference(self.rows(method, PROBE_KINDS), self.rows(BASELINE, PROBE_KINDS))

    def probes_by_edits(self, method: str) -> dict[str, list[dict]]:
        """The probe rows at ft=0 by how many edits the case applies (`EDIT_COUNTS` bins)."""
        rows = self.rows(method, PROBE_KINDS)
        return {name: [r for r in rows if lo <= edits_applied(r["params"]) <= hi]
                for name, (lo, hi) in EDIT_COUNTS.items()}

    def answers(self, method: str, variant: str = TARGET, kinds: Sequence[str] = (EDIT,)) -> dict[str, Rate]:
        """The share of the target's questions answered with each of `ANSWERS` or other text, at ft=0."""
        verdicts = [answered(r) for r in self.rows(method, kinds, variant=variant)]
        return {name: Rate(verdicts.count(name), len(verdicts)) for name in (*ANSWERS, OTHER_TEXT)}

    def after_fillers(self, method: str, mode: str) -> Rate:
        """Edit accuracy after `first_filler` turns of `mode`."""
        return self.edit(method, (mode, self.first_filler))

    def by_axis(self, method: str) -> dict[str, dict[str, Rate]]:
        """Edit accuracy at ft=0 for every value of every control axis (Figure 2)."""
        groups: dict[str, dict[str, list[dict]]] = {axis: defaultdict(list) for axis in AXIS_NAMES}
        for r in self.rows(method):
            for axis in AXIS_NAMES:
                groups[axis][str(r["params"][axis])].append(r)
        return {axis: {value: rate(rs) for value, rs in sorted(values.items())} for axis, values in groups.items()}

    def decay(self, method: str, field: str = "correct_stripped") -> dict[str, list[tuple[int, Rate]]]:
        """Edit accuracy (or another score `field`) against filler turns per mode, sharing the ft=0
        point (Figure 3)."""
        base = self.edit(method, field=field)
        return {mode: [(0, base)] + [(k, self.edit(method, (m, k), field)) for m, k in self.settings if m == mode]
                for mode in self.config["modes"]}

    def blast(self, method: str) -> dict[str, list[int]]:
        """Per probe kind, cases counted by (edit verdict, probe verdict), in `OUTCOMES` order:
        a verdict is the majority of the case's rows (Figure 4)."""
        edits = defaultdict(list)
        for r in self.rows(method):
            edits[r["case_id"]].append(r)
        out = {}
        for kind in PROBE_KINDS:
            probes = defaultdict(list)
            for r in self.rows(method, (kind,)):
                probes[r["case_id"]].append(r)
            counts = [0, 0, 0, 0]
            for case, rs in probes.items():
                counts[2 * (not majority(edits[case])) + (not majority(rs))] += 1
            out[kind] = counts
        return out

    def clean(self, method: str) -> Rate:
        return rate(r for r in self.rows(method) if all(r["params"][a] == v for a, v in CLEAN.items()))

    def by_answer_length(self, method: str) -> dict[str, tuple[Rate, float]]:
        """Edit accuracy and mean first-token P(new) for single- and multi-token targets."""
        out = {}
        for name, test in (("single-token", lambda n: n == 1), ("multi-token", lambda n: n > 1)):
            rs = [r for r in self.rows(method) if test(r["answer_tokens"])]
            out[name] = rate(rs), (sum(r["p_new"] for r in rs) / len(rs) if rs else math.nan)
        return out


def load(folder: str | os.PathLike) -> Analysis:
    rows = read_rows(folder)
    if not rows:
        raise ValueError(f"{folder} has no rows yet")
    return Analysis(rows, read_config(folder))
