"""The numbers of a run (paper §5.5-§5.6), as markdown tables and the four figures.

Every accuracy uses `correct_stripped` and carries a Wilson 95% interval and its row count. Edit
metrics count only retained cases: those whose unedited model (`none`, ft=0) answers a majority of
the target's paraphrases with the old value. Specificity controls: target specificity is a method's
edit accuracy minus its success when calibrated on the wrong entity; same-value bleed is how often a
distractor that holds the old value is answered with the new one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from rime.axes import AXES, PROBE_KINDS
from rime.protocol import EDIT, JOINT, NO_FILLER, TARGET, WRONG_ENTITY
from rime.rows import read_config, read_rows
from rime.scoring import wilson

REPORT = "report.md"
AXIS_NAMES = (*AXES, "target_position")
CLEAN = {"multi_prop_count": 1, "overwrite_count": 0, "distractor_count": 0}
OUTCOMES = ("edit ok, probe ok", "edit ok, probe broken", "edit failed, probe ok", "edit failed, probe broken")


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


def rate(rows: Iterable[dict], field: str = "correct_stripped") -> Rate:
    flags = [bool(r[field]) for r in rows]
    return Rate(sum(flags), len(flags))


def majority(rows: Sequence[dict], field: str = "correct_stripped") -> bool:
    return 2 * sum(bool(r[field]) for r in rows) > len(rows)


class Analysis:
    """A run's rows, indexed for the report's cuts."""

    def __init__(self, rows: Sequence[dict], config: dict):
        self.config = config
        self.methods: list[str] = config["methods"]
        # the methods that install a value: those with a wrong-entity control
        self.edit_methods = [m for m in self.methods if m in config["wrong_entity"]] or list(self.methods)
        self.settings = [(mode, k) for mode in config["modes"] for k in config["fillers"] if k]
        self.cases = sorted({r["case_id"] for r in rows})
        baseline = defaultdict(list)
        for r in rows:
            if (r["method"], r["variant"], r["filler_turns"], r["kind"]) == ("none", TARGET, 0, EDIT):
                baseline[r["case_id"]].append(r)
        self.retained = {case for case, rs in baseline.items() if majority(rs, "old_stripped")}
        self.index: dict[tuple, list[dict]] = defaultdict(list)
        for r in rows:
            if r["case_id"] in self.retained:
                key = (r["method"], r["variant"], r["filler_mode"], r["filler_turns"], r["kind"])
                self.index[key].append(r)
        self.n_rows = len(rows)
        with_fillers = {r["method"] for r in rows if r["filler_turns"]}
        self.filler_methods = [m for m in self.methods if m in with_fillers]

    def retention(self) -> str:
        return f"{len(self.retained)} of {len(self.cases)} cases retained"

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

    def specificity(self, method: str) -> float:
        return self.edit(method).value - self.wrong_entity(method).value

    def bleed(self, method: str) -> Rate:
        return rate(self.rows(method, ("same_value_distractor",)), "new_stripped")

    def after_one(self, method: str, mode: str) -> Rate:
        return self.edit(method, (mode, 1))

    def by_axis(self, method: str) -> dict[str, dict[str, Rate]]:
        """Edit accuracy at ft=0 for every value of every control axis (Figure 2)."""
        groups: dict[str, dict[str, list[dict]]] = {axis: defaultdict(list) for axis in AXIS_NAMES}
        for r in self.rows(method):
            for axis in AXIS_NAMES:
                groups[axis][str(r["params"][axis])].append(r)
        return {axis: {value: rate(rs) for value, rs in sorted(values.items())} for axis, values in groups.items()}

    def decay(self, method: str) -> dict[str, list[tuple[int, Rate]]]:
        """Edit accuracy against filler turns per mode, sharing the ft=0 point (Figure 3)."""
        base = self.edit(method)
        return {mode: [(0, base)] + [(k, self.edit(method, (m, k))) for m, k in self.settings if m == mode]
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


def _points(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.0f} pts"


def headline_table(a: Analysis) -> str:
    """Figure 1's numbers plus the specificity controls, one row per method."""
    header = ["method", "edit acc ft=0", "probe preservation", "ft=1 neutral", "ft=1 adversarial",
              "wrong-entity success", "target specificity", "same-value bleed"]
    rows = []
    for m in a.methods:
        controls = [a.wrong_entity(m), _points(a.specificity(m))] if m in a.config["wrong_entity"] else ["", ""]
        rows.append([m, a.edit(m), a.probes(m), a.after_one(m, "neutral"), a.after_one(m, "adversarial"),
                     *controls, a.bleed(m)])
    return _table(header, rows)


def headline_summary(a: Analysis) -> str:
    """What `python -m rime run` prints: the retention count and the headline table."""
    return f"{a.retention()}; accuracies are correct_stripped, % [Wilson 95% CI] n=rows\n\n{headline_table(a)}"


def markdown(a: Analysis, figures: dict[str, str]) -> str:
    c = a.config
    package = ", ".join(f"{name} {version}" for name, version in c["package"].items())
    parts = [
        f"# RIME report\n\nModel `{c['model']['ref']}` (params sha256 {c['model']['params_sha256'][:12]}), "
        f"cases `{c['dataset']['source']}` ({c['dataset']['cases']} cases, sha256 {c['dataset']['sha256'][:12]}), "
        f"{package}. Methods {', '.join(c['methods'])}; filler turns {c['fillers']} "
        f"({', '.join(c['modes'])}); greedy answers of at most {c['max_new_tokens']} tokens.",
        f"{a.n_rows} rows. Retention filter: {a.retention()} (the unedited model answers most target "
        "paraphrases with the old value); the others are left out of every metric below.",
        "Every accuracy is `correct_stripped`, shown as percent [Wilson 95% interval] n=rows.",
        "## Headline (Figure 1)\n\nEdit accuracy at ft=0, probe preservation on other facts of the same "
        "passage, and edit accuracy after one filler turn; target specificity is edit accuracy minus "
        "wrong-entity success; same-value bleed is the share of same-value distractors answered with the "
        "new value.",
        headline_table(a),
        _table(["method", "joint edits (other properties)", "old value survives"],
               [[m, a.joint(m), a.old_survives(m)] for m in a.methods]),
        f"![headline]({figures['headline']})",
        "## Difficulty by control axis (Figure 2)",
    ]
    for m in a.edit_methods:
        axes = a.by_axis(m)
        parts.append(f"`{m}` at ft=0, pooled {a.edit(m)}:\n\n"
                     + _table(["axis", "value", "edit acc"],
                              [[axis, value, r] for axis, values in axes.items() for value, r in values.items()]))
    parts += [f"![difficulty]({figures['difficulty']})", "## Filler decay (Figure 3)"]
    turns = [0, *sorted({k for _, k in a.settings})]
    decay_rows = []
    for m in a.filler_methods:
        for mode, points in a.decay(m).items():
            by_k = dict(points)
            decay_rows.append([m, mode, *(by_k.get(k, "") for k in turns)])
    parts += [_table(["method", "mode", *(f"ft={k}" for k in turns)], decay_rows),
              f"![filler decay]({figures['decay']})", "## Blast radius (Figure 4)\n\nCases by edit verdict x "
              "probe verdict (each the majority of the case's rows at ft=0), per probe kind."]
    parts.append(_table(["method", "probe kind", *OUTCOMES],
                        [[m, kind, *counts] for m in a.edit_methods for kind, counts in a.blast(m).items()]))
    parts += [f"![blast radius]({figures['blast']})", "## Table 2: conditions"]
    condition_rows = []
    for m in a.methods:
        condition_rows.append([f"{m}, ft=0 (headline)", a.edit(m), a.clean(m), a.probes(m)])
        if m in a.filler_methods:
            condition_rows += [[f"{m}, ft={k} {mode}", a.edit(m, (mode, k)), "n/a", "n/a"] for mode, k in a.settings]
    parts.append(_table(["condition", "edit acc", "clean slice (mp=1, ow=0, dc=0)", "probe preservation"],
                        condition_rows))
    length_rows = []
    for m in a.methods:
        for name, (r, p_new) in a.by_answer_length(m).items():
            length_rows.append([m, name, r, "n/a" if math.isnan(p_new) else f"{p_new:.2f}"])
    parts.append("Single- vs multi-token targets at ft=0 (first-token P(new) is logged, never scored):\n\n"
                 + _table(["method", "target", "edit acc", "mean first-token P(new)"], length_rows))
    parts.append("Raw vs think-stripped scoring at ft=0:\n\n"
                 + _table(["method", "correct_raw", "correct_stripped"],
                          [[m, a.edit(m, field="correct_raw"), a.edit(m)] for m in a.methods]))
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
