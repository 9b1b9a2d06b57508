"""The paper's four figures as PNGs, drawn from an `Analysis` (matplotlib, Agg backend).

Each figure shows the same numbers as its table in `report.md`, with Wilson 95% intervals as
error bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rime.report import OUTCOMES, Analysis, Rate  # noqa: E402

FILES = {"headline": "fig1_headline.png", "difficulty": "fig2_difficulty.png",
         "decay": "fig3_filler_decay.png", "blast": "fig4_blast_radius.png"}
OUTCOME_COLOURS = ("#2e9d5b", "#ef7f6a", "#c9c9c9", "#8c8c8c")
DPI = 120


def _errors(rates: Sequence[Rate]) -> np.ndarray:
    """`[2, n]` distances from each value down and up to its interval (0 where there are no rows)."""
    values = np.array([r.value if r.n else 0.0 for r in rates])
    lo = np.array([r.ci[0] if r.n else 0.0 for r in rates])
    hi = np.array([r.ci[1] if r.n else 0.0 for r in rates])
    return np.stack([values - lo, hi - values])


def _values(rates: Sequence[Rate]) -> np.ndarray:
    return np.array([r.value if r.n else 0.0 for r in rates])


def headline(a: Analysis, path: Path) -> None:
    """Figure 1: per method, edit accuracy at ft=0, probe preservation, and edit accuracy after one
    neutral and one adversarial filler turn."""
    groups = ("edit acc ft=0", "probe preservation", "ft=1 neutral", "ft=1 adversarial")
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(groups), 4))
    width = 0.8 / len(a.methods)
    x = np.arange(len(groups))
    for i, m in enumerate(a.methods):
        rates = [a.edit(m), a.probes(m), a.after_one(m, "neutral"), a.after_one(m, "adversarial")]
        ax.bar(x + (i - (len(a.methods) - 1) / 2) * width, _values(rates), width, yerr=_errors(rates),
               capsize=2, label=m)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (correct_stripped)")
    ax.set_title("Headline (pooled, retained cases)")
    ax.legend(fontsize="small", ncol=2)
    _save(fig, path)


def difficulty(a: Analysis, path: Path) -> None:
    """Figure 2: edit accuracy at ft=0 for every value of every control axis, one panel per edit
    method, with the pooled accuracy as a vertical line."""
    panels = [(m, a.by_axis(m)) for m in a.edit_methods]
    labels = [f"{axis}={value}" for axis, values in panels[0][1].items() for value in values]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.28 * len(labels) + 1.5),
                             sharey=True, squeeze=False)
    for ax, (m, by_axis) in zip(axes[0], panels, strict=True):
        rates = {f"{axis}={value}": r for axis, values in by_axis.items() for value, r in values.items()}
        shown = [rates.get(label, Rate(0, 0)) for label in labels]
        y = np.arange(len(labels))
        ax.errorbar(_values(shown), y, xerr=_errors(shown), fmt="o", markersize=4, capsize=2)
        pooled = a.edit(m)
        if pooled.n:
            ax.axvline(pooled.value, color="red", linewidth=1)
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_xlabel("edit accuracy, ft=0")
        ax.set_title(m)
    axes[0][0].invert_yaxis()  # the panels share the axis: invert it once, first axis at the top
    _save(fig, path)


def decay(a: Analysis, path: Path) -> None:
    """Figure 3: edit accuracy against filler turns, a solid line per method for neutral filler and
    a dashed one for adversarial, both from the shared ft=0 point."""
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"neutral": "-", "adversarial": "--"}
    lines = [(m, mode, points) for m in a.filler_methods for mode, points in a.decay(m).items()]
    for i, (m, mode, points) in enumerate(lines):
        shift = 0.03 * (i - (len(lines) - 1) / 2)  # side by side, so equal values stay visible
        rates = [r for _, r in points]
        ax.errorbar([k + shift for k, _ in points], _values(rates), yerr=_errors(rates),
                    color=f"C{a.filler_methods.index(m)}", linestyle=styles[mode], marker="o", markersize=3,
                    capsize=2, label=f"{m}, {mode}")
    ax.set_xticks([0, *sorted({k for _, k in a.settings})])
    ax.set_xlabel("filler turns")
    ax.set_ylabel("edit accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Multi-turn filler decay")
    ax.legend(fontsize="small")
    _save(fig, path)


def blast(a: Analysis, path: Path) -> None:
    """Figure 4: per probe kind, the cases split by edit verdict x probe verdict, as stacked shares."""
    fig, axes = plt.subplots(1, len(a.edit_methods), figsize=(4.5 * len(a.edit_methods), 4), squeeze=False)
    for ax, m in zip(axes[0], a.edit_methods, strict=True):
        counts = a.blast(m)
        kinds = list(counts)
        totals = np.array([max(1, sum(c)) for c in counts.values()])
        bottom = np.zeros(len(kinds))
        for j, (outcome, colour) in enumerate(zip(OUTCOMES, OUTCOME_COLOURS, strict=True)):
            share = np.array([counts[k][j] for k in kinds]) / totals
            ax.bar(kinds, share, bottom=bottom, color=colour, label=outcome)
            bottom += share
        ax.set_xticks(range(len(kinds)), [f"{k}\n(n={sum(counts[k])})" for k in kinds], fontsize="small")
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of cases")
        ax.set_title(m)
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_all(a: Analysis, folder: Path) -> dict[str, str]:
    """Writes every figure into `folder`; returns their file names by key."""
    for key, draw in (("headline", headline), ("difficulty", difficulty), ("decay", decay), ("blast", blast)):
        draw(a, folder / FILES[key])
    return dict(FILES)
