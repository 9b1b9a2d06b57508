"""A run's report (paper §5.5-§5.6): `report.md`, its tables, and the figures, written from an
`Analysis` (`rime.eval.analysis` defines each measure, its interval and which cases count).

Methods are listed by what they read besides the state (`reads` in run.json), so a method that
reads the conversation is never shown as if it edited the state alone; methods that erase
(`erases`) have their own section, judged on the old value's absence rather than on the new
value's presence.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from rime.eval import figures
from rime.eval.analysis import (
    ANSWERS,
    BASELINE,
    EDIT_COUNTS,
    OTHER_TEXT,
    OUTCOMES,
    UNRECORDED,
    Analysis,
    difference,
    load,
    rate,
)
from rime.eval.protocol import JOINT, WRONG_ENTITY

REPORT = "report.md"
GROUPS = {
    "nothing": "Reads nothing: the unedited baseline",
    "calibration": "Reads calibration text built from the case's fact, and edits the state",
    "context": "Adds text to the conversation: in-context",
    "transcript": "Re-reads the transcript that built the state",
    UNRECORDED: "What these methods read was not recorded",
}


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
        f"Unedited target recall, every case: {a.unedited_recall()}; cases whose passages overwrite an "
        f"earlier value: {a.unedited_recall(True)}; the others: {a.unedited_recall(False)}.",
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


def write_report(folder: str | os.PathLike) -> Path:
    """Writes `report.md` and the figures' PNGs into the run folder; returns the report's path."""
    folder = Path(folder)
    a = load(folder)
    names = figures.write_all(a, folder)
    path = folder / REPORT
    path.write_text(markdown(a, names), encoding="utf-8")
    return path
