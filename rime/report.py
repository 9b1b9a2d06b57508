"""The numbers of a run (paper §5.5-§5.6), as markdown tables and figures.

Every accuracy uses `correct_stripped` and carries a Wilson 95% interval and its row count. Edit
metrics count only retained cases: those whose unedited model (`none`, ft=0) answers a majority of
the target's paraphrases with the old value. Specificity controls: target specificity is a method's
edit accuracy minus its success when calibrated on the wrong entity, a difference over the same
cases with a case-bootstrap interval; same-value bleed is how often a distractor that holds the old
value is answered with the new one (wrong-entity bleed: the same, for the wrong-entity variant).

Methods are listed by what they read besides the state (`reads` in run.json), so a method that
reads the conversation is never shown as if it edited the state alone; methods that erase
(`erases`) have their own section, judged on the old value's absence rather than on the new
value's presence.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from editing import READS
from rime.axes import AXES, PROBE_KINDS
from rime.protocol import EDIT, JOINT, NO_FILLER, TARGET, WRONG_ENTITY, edits_applied
from rime.rows import read_config, read_rows
from rime.scoring import bootstrap_difference, wilson

REPORT = "report.md"
AXIS_NAMES = (*AXES, "target_position")
CLEAN = {"multi_prop_count": 1, "overwrite_count": 0, "distractor_count": 0}
OUTCOMES = ("edit ok, probe ok", "edit ok, probe broken", "edit failed, probe ok", "edit failed, probe broken")
BASELINE = "none"
UNRECORDED = "not recorded"  # run folders written before methods declared what they read
GROUPS = {
    "nothing": "Reads nothing: the unedited baseline",
    "calibration": "Reads calibration text built from the case's fact, and edits the state",
    "context": "Adds text to the conversation: in-context",
    "transcript": "Re-reads the transcript that built the state",
    UNRECORDED: "What these methods read was not recorded",
}
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


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _grouped(a: Analysis, methods: Sequence[str], header: Sequence[str],
             row: Callable[[str], Sequence[object]]) -> str:
    """One table per group of `methods` by what they read, each under its group's title."""
    return "\n\n".join(f"{GROUPS[reads]} (reads `{reads}`):\n\n" + _table(header, [row(m) for m in group])
                       for reads, group in a.groups(methods))


def headline_table(a: Analysis) -> str:
    """Figure 1's numbers, one row per installing method, grouped by what the methods read."""
    k = a.first_filler
    header = ["method", "edit acc ft=0", "probe preservation", f"ft={k} neutral", f"ft={k} adversarial"]
    return _grouped(a, a.installers, header, lambda m: [
        m, a.edit(m), a.probes(m), a.after_fillers(m, "neutral"), a.after_fillers(m, "adversarial")])


def _controlled(a: Analysis, m: str, value: object) -> object:
    """`value` for a method with a wrong-entity control, else "not run"."""
    return value if m in a.config["wrong_entity"] else "not run"


def frontier_table(a: Analysis) -> str:
    """Every installing method on the edit / specificity / bleed / probe frontier at ft=0."""
    header = ["method", "edit acc", "wrong-entity success", "target specificity", "same-value bleed",
              "wrong-entity bleed", "probe preservation", "probes vs unedited"]
    return _grouped(a, a.installers, header, lambda m: [
        m, a.edit(m), _controlled(a, m, a.wrong_entity(m)), _controlled(a, m, a.specificity(m)), a.bleed(m),
        _controlled(a, m, a.bleed(m, WRONG_ENTITY)), a.probes(m),
        "reference" if m == BASELINE else a.probe_change(m)])


def edits_table(a: Analysis, methods: Sequence[str]) -> str:
    """Probe preservation by how many edits the case applies, and its change from the unedited model."""
    base = a.probes_by_edits(BASELINE)

    def row(m: str) -> list[object]:
        bins = a.probes_by_edits(m)
        changes = ["reference" if m == BASELINE else difference(bins[b], base[b]) for b in EDIT_COUNTS]
        return [m, *(rate(bins[b]) for b in EDIT_COUNTS), *changes]

    header = ["method", *EDIT_COUNTS, *(f"vs unedited, {b}" for b in EDIT_COUNTS)]
    return _grouped(a, methods, header, row)


def erase_table(a: Analysis) -> str:
    """Per erasing method (and the unedited model for reference), what the target's questions are
    answered with after erasing, the old value after erasing by the wrong name, and probes."""
    header = ["method", *(f"target's questions: {name}" for name in (*ANSWERS, OTHER_TEXT)),
              "old value, erased by the wrong name", "old value, joint properties", "probe preservation",
              "probes vs unedited"]

    def row(m: str) -> list[object]:
        wrong = a.answers(m, WRONG_ENTITY)["old value"] if m != BASELINE else "not run"
        return [m, *a.answers(m).values(), wrong, a.answers(m, kinds=(JOINT,))["old value"], a.probes(m),
                "reference" if m == BASELINE else a.probe_change(m)]

    return _table(header, [row(m) for m in (BASELINE, *a.erasers)])


def decay_table(a: Analysis, methods: Sequence[str], field: str = "correct_stripped") -> str:
    """`field` at every filler setting, a row per method and mode."""
    turns = [0, *sorted({k for _, k in a.settings})]
    rows = [[m, mode, *(dict(points).get(k, "") for k in turns)]
            for m in methods for mode, points in a.decay(m, field).items()]
    return _table(["method", "mode", *(f"ft={k}" for k in turns)], rows)


def headline_summary(a: Analysis) -> str:
    """What `python -m rime run` prints: the retention count, the headline and frontier tables, and
    the erasing methods' table when a run has any."""
    parts = [f"{a.retention()}; accuracies are correct_stripped, % [Wilson 95% CI] n=rows; differences are "
             "points [case-bootstrap 95% CI]", headline_table(a), "Frontier at ft=0:", frontier_table(a)]
    if a.erasers:
        parts += ["Erasing methods at ft=0:", erase_table(a)]
    return "\n\n".join(parts)


def markdown(a: Analysis, figures: dict[str, str]) -> str:
    c = a.config
    package = ", ".join(f"{name} {version}" for name, version in c["package"].items())
    dropped = ", ".join(f"`{case}`" for case in a.dropped) or "none"
    parts = [
        f"# RIME report\n\nModel `{c['model']['ref']}` (params sha256 {c['model']['params_sha256'][:12]}), "
        f"cases `{c['dataset']['source']}` ({c['dataset']['cases']} cases, sha256 {c['dataset']['sha256'][:12]}), "
        f"{package}. Methods {', '.join(c['methods'])}; filler turns {c['fillers']} "
        f"({', '.join(c['modes'])}); greedy answers of at most {c['max_new_tokens']} tokens.",
        f"{a.n_rows} rows. Retention filter: {a.retention()} (the unedited model answers most target "
        "paraphrases with the old value); the others are left out of every metric below. "
        f"Dropped ({len(a.dropped)}): {dropped}.",
        "Every accuracy is `correct_stripped`, shown as percent [Wilson 95% interval] n=rows; every "
        "difference of two rates over the same cases is in points [case-bootstrap 95% interval] n=cases. "
        "Methods are grouped by what they read besides the state.",
        "## Headline (Figure 1)\n\nEdit accuracy at ft=0, probe preservation on other facts of the same "
        "passage, and edit accuracy after one filler turn.",
        headline_table(a),
        _table(["method", "joint edits (other properties)", "old value survives"],
               [[m, a.joint(m), a.old_survives(m)] for m in a.installers]),
        f"![headline]({figures['headline']})",
        "## Frontier\n\nAt ft=0: target specificity is edit accuracy minus wrong-entity success (the method "
        "run with the case's `wrong_entity` in place of the target); same-value bleed is the share of "
        "same-value distractors answered with the new value, wrong-entity bleed the same for the "
        "wrong-entity variant; probes vs unedited is probe preservation minus the unedited model's.",
        frontier_table(a),
        f"![frontier]({figures['frontier']})",
        "## Probe preservation by number of edits applied\n\nAt ft=0, by the edits the case applies (stack "
        "steps plus jointly edited properties).",
        edits_table(a, a.installers),
    ]
    if a.erasers:
        parts += [
            "## Erasing methods\n\nAt ft=0, what the target's questions are answered with after erasing "
            "(each answer counted once, in the columns' order: an answer naming the old value counts as "
            "old value); another passage value is one the passage gives someone else, or the target "
            "before an overwrite. Erasing by the wrong name should leave the old value in place.",
            erase_table(a),
            "Their probe preservation by number of edits applied:",
            edits_table(a, [BASELINE, *a.erasers]),
            "The old value on the target's questions after filler turns (the unedited model's for reference):",
            decay_table(a, [BASELINE, *a.erasers], "old_stripped"),
            f"![erasing]({figures['erase']})",
        ]
    parts.append("## Difficulty by control axis (Figure 2)")
    for m in a.edit_methods:
        axes = a.by_axis(m)
        parts.append(f"`{m}` at ft=0, pooled {a.edit(m)}:\n\n"
                     + _table(["axis", "value", "edit acc"],
                              [[axis, value, r] for axis, values in axes.items() for value, r in values.items()]))
    parts += [f"![difficulty]({figures['difficulty']})", "## Filler decay (Figure 3)"]
    parts += [decay_table(a, a.filler_methods),
              f"![filler decay]({figures['decay']})", "## Blast radius (Figure 4)\n\nCases by edit verdict x "
              "probe verdict (each the majority of the case's rows at ft=0), per probe kind."]
    parts.append(_table(["method", "probe kind", *OUTCOMES],
                        [[m, kind, *counts] for m in a.edit_methods for kind, counts in a.blast(m).items()]))
    parts += [f"![blast radius]({figures['blast']})", "## Table 2: conditions"]
    condition_rows = []
    for m in a.installers:
        condition_rows.append([f"{m}, ft=0 (headline)", a.edit(m), a.clean(m), a.probes(m)])
        if m in a.filler_methods:
            condition_rows += [[f"{m}, ft={k} {mode}", a.edit(m, (mode, k)), "n/a", "n/a"] for mode, k in a.settings]
    parts.append(_table(["condition", "edit acc", "clean slice (mp=1, ow=0, dc=0)", "probe preservation"],
                        condition_rows))
    length_rows = []
    for m in a.installers:
        for name, (r, p_new) in a.by_answer_length(m).items():
            length_rows.append([m, name, r, "n/a" if math.isnan(p_new) else f"{p_new:.2f}"])
    parts.append("Single- vs multi-token targets at ft=0 (first-token P(new) is logged, never scored):\n\n"
                 + _table(["method", "target", "edit acc", "mean first-token P(new)"], length_rows))
    parts.append("Raw vs think-stripped scoring at ft=0:\n\n"
                 + _table(["method", "correct_raw", "correct_stripped"],
                          [[m, a.edit(m, field="correct_raw"), a.edit(m)] for m in a.installers]))
    return "\n\n".join(parts) + "\n"


def load(folder: str | os.PathLike) -> Analysis:
    rows = read_rows(folder)
    if not rows:
        raise ValueError(f"{folder} has no rows yet")
    return Analysis(rows, read_config(folder))


def write_report(folder: str | os.PathLike) -> Path:
    """Writes `report.md` and the figures' PNGs into the run folder; returns the report's path."""
    from rime import figures  # matplotlib is needed here only

    folder = Path(folder)
    a = load(folder)
    names = figures.write_all(a, folder)
    path = folder / REPORT
    path.write_text(markdown(a, names), encoding="utf-8")
    return path
