"""The paper's four figures and the frontier as PNGs, drawn from an `Analysis` (matplotlib, Agg).

Each figure shows the same numbers as its table in `report.md`, with 95% intervals as error bars
(Wilson for rates, case-bootstrap for differences). A value that was not measured is never drawn:
its place says "not run".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MultipleLocator, PercentFormatter  # noqa: E402

from rime.eval.analysis import ANSWERS, BASELINE, OTHER_TEXT, OUTCOMES, Analysis, Difference, Rate  # noqa: E402
from rime.eval.protocol import WRONG_ENTITY, scoped_base  # noqa: E402

FILES = {"headline": "fig1_headline.png", "difficulty": "fig2_difficulty.png",
         "decay": "fig3_filler_decay.png", "blast": "fig4_blast_radius.png", "frontier": "fig5_frontier.png"}
ERASE_FILE = "fig6_erasing.png"
LIFELONG_FILE = "fig_sessions_lifelong.png"
DODGE = 0.05  # log2 units between neighbouring methods' points in the lifelong figure
OUTCOME_COLOURS = ("#2e9d5b", "#ef7f6a", "#c9c9c9", "#8c8c8c")
ANSWER_COLOURS = ("#d1495b", "#2e9d5b", "#edae49", "#c9c9c9")
NOT_RUN = "not run"
DPI = 120

Interval = Rate | Difference


def _measured(x: Interval) -> bool:
    return x.n > 0 if isinstance(x, Rate) else not np.isnan(x.value)


def _bounds(x: Interval) -> tuple[float, float, float]:
    """(value, low, high) of a measured rate or difference."""
    return (x.value, *x.ci) if isinstance(x, Rate) else (x.value, x.lo, x.hi)


def _errors(values: Sequence[Interval]) -> np.ndarray:
    """`[2, n]` distances from each (measured) value down and up to its interval."""
    v, lo, hi = np.array([_bounds(x) for x in values]).reshape(-1, 3).T
    return np.stack([v - lo, hi - v])


def _values(values: Sequence[Interval]) -> np.ndarray:
    return np.array([_bounds(x)[0] for x in values])


def headline(a: Analysis) -> plt.Figure:
    """Figure 1: per installing method, edit accuracy at ft=0, probe preservation, and edit accuracy
    after the fewest neutral and adversarial filler turns the run measured."""
    k = a.first_filler
    groups = ("edit acc ft=0", "probe preservation", f"ft={k} neutral", f"ft={k} adversarial")
    fig, ax = plt.subplots(figsize=(3.5 + 1.6 * len(groups), 4))
    width = 0.8 / len(a.installers)
    x = np.arange(len(groups))
    for i, m in enumerate(a.installers):
        rates = [a.edit(m), a.probes(m), a.after_fillers(m, "neutral"), a.after_fillers(m, "adversarial")]
        at = x + (i - (len(a.installers) - 1) / 2) * width
        shown = [j for j, r in enumerate(rates) if _measured(r)]
        ax.bar(at[shown], _values([rates[j] for j in shown]), width, yerr=_errors([rates[j] for j in shown]),
               capsize=2, label=m, color=f"C{i}")
        for j in sorted(set(range(len(rates))) - set(shown)):
            ax.text(at[j], 0.01, NOT_RUN, rotation=90, ha="center", va="bottom", fontsize="x-small", color="grey")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(x, groups)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (correct_stripped)")
    ax.set_title("Headline (pooled, retained cases)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def frontier(a: Analysis) -> plt.Figure:
    """Every installing method on the frontier at ft=0, a row per method (grouped by what it reads,
    one colour per group) and a panel per measure; the probe panel marks the unedited model."""
    panels = [
        ("edit accuracy", lambda m: a.edit(m), (0, 1)),
        ("target specificity (points)", lambda m: a.specificity(m), (-1, 1)),
        ("same-value bleed", lambda m: a.bleed(m), (0, 1)),
        ("wrong-entity bleed", lambda m: a.bleed(m, WRONG_ENTITY), (0, 1)),
        ("probe preservation", lambda m: a.probes(m), (0, 1)),
    ]
    groups = a.groups(a.installers)
    rows = [(m, g) for g, (_, methods) in enumerate(groups) for m in methods]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1.5, 0.42 * len(rows) + 2.0),
                             sharey=True, squeeze=False)
    for ax, (title, measure, limits) in zip(axes[0], panels, strict=True):
        for i, (m, g) in enumerate(rows):
            value = measure(m)
            if _measured(value):
                ax.errorbar(_values([value]), [i], xerr=_errors([value]), fmt="o", markersize=4, capsize=2,
                            color=f"C{g}")
            else:
                ax.text(sum(limits) / 2, i, NOT_RUN, ha="center", va="center", fontsize="small", color="grey")
        for boundary in np.cumsum([len(methods) for _, methods in groups])[:-1]:
            ax.axhline(boundary - 0.5, color="lightgrey", linewidth=1)
        if limits[0] < 0:
            ax.axvline(0, color="grey", linewidth=1)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:+.0f}" if v else "0"))
        else:
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlim(limits[0] - 0.03, limits[1] + 0.03)
        ax.set_title(title, fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    base = a.probes(BASELINE)
    if _measured(base):
        axes[0][-1].axvline(base.value, color="black", linestyle="--", linewidth=1, label="unedited")
    axes[0][0].set_yticks(y, [m for m, _ in rows], fontsize="small")
    axes[0][0].set_ylim(len(rows) - 0.5, -0.5)  # first method at the top
    handles = [plt.Line2D([], [], color=f"C{g}", marker="o", linestyle="", label=f"reads: {reads}")
               for g, (reads, _) in enumerate(groups)]
    handles += [plt.Line2D([], [], color="black", linestyle="--", label="unedited probe preservation")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize="small", frameon=False)
    fig.suptitle("Frontier at ft=0 (retained cases, 95% intervals)")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def erasing(a: Analysis) -> plt.Figure:
    """The erasing methods at ft=0: what the target's questions are answered with (erased by the
    target's name and by the wrong name, the unedited model for reference), and probe preservation."""
    bars = [(f"{BASELINE} (unedited)", a.answers(BASELINE))]
    for m in a.erasers:
        bars += [(m, a.answers(m)), (f"{m}, wrong name", a.answers(m, WRONG_ENTITY))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(bars) + 2.2),
                                      gridspec_kw={"width_ratios": (2, 1)})
    y = np.arange(len(bars))
    shown = [i for i, (_, answers) in enumerate(bars) if answers[OTHER_TEXT].n]
    start = np.zeros(len(shown))
    for name, colour in zip((*ANSWERS, OTHER_TEXT), ANSWER_COLOURS, strict=True):
        share = np.array([bars[i][1][name].value for i in shown])
        left.barh(y[shown], share, left=start, color=colour, label=name)
        start += share
    for i, (_, answers) in enumerate(bars):
        n = answers[OTHER_TEXT].n
        left.text(1.01, i, f"n={n}" if n else NOT_RUN, va="center", fontsize="small",
                  color="black" if n else "grey")
    left.set_yticks(y, [label for label, _ in bars], fontsize="small")
    left.set_ylim(len(bars) - 0.5, -0.5)
    left.set_xlim(0, 1.12)
    left.set_xlabel("share of the target's questions")
    left.set_title("Answers after erasing")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize="small", frameon=False)
    methods = [BASELINE, *a.erasers]
    rates = [a.probes(m) for m in methods]
    shown = [i for i, r in enumerate(rates) if _measured(r)]
    right.errorbar(_values([rates[i] for i in shown]), shown, xerr=_errors([rates[i] for i in shown]),
                   fmt="o", markersize=4, capsize=2)
    for i in sorted(set(range(len(methods))) - set(shown)):
        right.text(0.5, i, NOT_RUN, ha="center", va="center", fontsize="small", color="grey")
    right.set_yticks(range(len(methods)), methods, fontsize="small")
    right.set_ylim(len(methods) - 0.5, -0.5)
    right.set_xlim(0, 1.03)
    right.set_title("Probe preservation")
    fig.tight_layout()
    return fig


def _axis_start(rates: Sequence[Rate]) -> float:
    """Where a rate axis starts: at the lowest measured interval bound, floored to a tenth, so that
    rates bunched near 100% are told apart (0 when nothing is measured)."""
    lows = [r.ci[0] for r in rates if _measured(r)]
    return float(np.floor(10 * min(lows, default=0.0)) / 10)


def difficulty(a: Analysis) -> plt.Figure:
    """Figure 2: edit accuracy at ft=0 for every value of every control axis, one panel per edit
    method, with the pooled accuracy as a vertical line."""
    panels = [(m, a.by_axis(m)) for m in a.edit_methods]
    labels = [f"{axis}={value}" for axis, values in panels[0][1].items() for value in values]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.28 * len(labels) + 1.5),
                             sharey=True, squeeze=False)
    for ax, (m, by_axis) in zip(axes[0], panels, strict=True):
        rates = {f"{axis}={value}": r for axis, values in by_axis.items() for value, r in values.items()}
        shown = [i for i, label in enumerate(labels) if label in rates and _measured(rates[label])]
        points = [rates[labels[i]] for i in shown]
        y = np.arange(len(labels))
        ax.errorbar(_values(points), shown, xerr=_errors(points), fmt="o", markersize=4, capsize=2)
        pooled = a.edit(m)
        if pooled.n:
            ax.axvline(pooled.value, color="red", linewidth=1)
        low = _axis_start([*points, pooled])
        for i in sorted(set(y) - set(shown)):
            ax.text((low + 1) / 2, i, NOT_RUN, ha="center", va="center", fontsize="x-small", color="grey")
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_xlim(low, 1.01)
        ax.xaxis.set_major_locator(MultipleLocator(0.05 if low >= 0.7 else 0.1))  # whole percents only
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel("edit accuracy, ft=0" + (f" (axis from {low:.0%})" if low else ""))
        ax.set_title(m)
    axes[0][0].invert_yaxis()  # the panels share the axis: invert it once, first axis at the top
    fig.tight_layout()
    return fig


def decay(a: Analysis) -> plt.Figure:
    """Figure 3: edit accuracy against filler turns, a solid line per method for neutral filler and
    a dashed one for adversarial, both from the shared ft=0 point."""
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"neutral": "-", "adversarial": "--"}
    lines = [(m, mode, points) for m in a.filler_methods for mode, points in a.decay(m).items()]
    for i, (m, mode, points) in enumerate(lines):
        shift = 0.03 * (i - (len(lines) - 1) / 2)  # side by side, so equal values stay visible
        points = [(k, r) for k, r in points if _measured(r)]
        rates = [r for _, r in points]
        ax.errorbar([k + shift for k, _ in points], _values(rates), yerr=_errors(rates),
                    color=f"C{a.filler_methods.index(m)}", linestyle=styles[mode], marker="o", markersize=3,
                    capsize=2)
    ax.set_xticks([0, *sorted({k for _, k in a.settings})])
    ax.set_xlabel("filler turns")
    ax.set_ylabel("edit accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Multi-turn filler decay")
    if lines:
        # one entry per method (colour) and per mode (line style): a line each would outgrow the plot
        handles = [plt.Line2D([], [], color=f"C{i}", marker="o", markersize=3, label=m)
                   for i, m in enumerate(a.filler_methods)]
        handles += [plt.Line2D([], [], color="black", linestyle=style, label=f"{mode} filler")
                    for mode, style in styles.items()]
        ax.legend(handles=handles, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15),
                  ncol=min(len(handles), 4), frameon=False)
    else:
        ax.text(0.5, 0.5, "no filler turns were run", transform=ax.transAxes, ha="center", color="grey")
    fig.tight_layout()
    return fig


def blast(a: Analysis) -> plt.Figure:
    """Figure 4: per probe kind, the cases split by edit verdict x probe verdict, as stacked shares."""
    fig, axes = plt.subplots(1, len(a.edit_methods), figsize=(4.5 * len(a.edit_methods), 4), squeeze=False)
    for ax, m in zip(axes[0], a.edit_methods, strict=True):
        counts = a.blast(m)
        kinds = list(counts)
        shown = [i for i, k in enumerate(kinds) if sum(counts[k])]
        totals = np.array([sum(counts[kinds[i]]) for i in shown])
        bottom = np.zeros(len(shown))
        for j, (outcome, colour) in enumerate(zip(OUTCOMES, OUTCOME_COLOURS, strict=True)):
            share = np.array([counts[kinds[i]][j] for i in shown]) / totals
            ax.bar(shown, share, bottom=bottom, color=colour, label=outcome)
            bottom += share
        for i in sorted(set(range(len(kinds))) - set(shown)):
            ax.text(i, 0.5, NOT_RUN, ha="center", va="center", fontsize="small", color="grey")
        names = [k.replace("_", "\n") for k in kinds]  # one word a line: long kinds would collide
        ax.set_xticks(range(len(kinds)), [f"{name}\n(n={sum(counts[k])})" for name, k in zip(names, kinds)],
                      fontsize="small")
        ax.set_xlim(-0.5, len(kinds) - 0.5)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of cases")
        ax.set_title(m)
    # from patches, not the bars: a panel without rows has bars that carry no colour
    handles = [Patch(color=colour, label=outcome) for outcome, colour in zip(OUTCOMES, OUTCOME_COLOURS, strict=True)]
    axes[0][-1].legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return fig


def write_all(a: Analysis, folder: Path) -> dict[str, str]:
    """Writes every figure into `folder` (the erasing one only when the run has erasing methods);
    returns their file names by key."""
    draws = {"headline": headline, "difficulty": difficulty, "decay": decay, "blast": blast, "frontier": frontier}
    files = dict(FILES)
    if a.erasers:
        draws["erase"], files["erase"] = erasing, ERASE_FILE
    for key, draw in draws.items():
        fig = draw(a)
        fig.savefig(folder / files[key], dpi=DPI, bbox_inches="tight")
        plt.close(fig)
    return files


def lifelong(curves: dict[str, dict[str, list[tuple[int, Rate]]]]) -> plt.Figure:
    """The lifelong curves of a session run (`rime.eval.sessions.lifelong_curves`): one panel per
    curve, one line per method over the number of actions with its 95% Wilson band, each
    method's points set slightly apart around the action count. A scoped method (`scoped(M)`)
    takes M's colour with a dotted line and open markers; `none` is dashed. A method with no
    point in a panel is listed as not run there; an action count without rows has no point."""
    methods = list(dict.fromkeys(m for per in curves.values() for m in per))
    bases = list(dict.fromkeys(scoped_base(m) for m in methods))
    colours = {m: plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")(i) for i, m in enumerate(bases)}
    ks = sorted({p[0] for per in curves.values() for points in per.values() for p in points})
    dodge = DODGE * min(1.0, 6 / max(len(methods), 1))
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.8), sharey=True)
    for ax, (curve, per) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        missing = []
        for i, method in enumerate(methods):
            points = per.get(method, [])
            if not points:
                missing.append(method)
                continue
            # methods side by side around each K, so equal curves do not hide one another
            k = np.array([p[0] for p in points]) * 2 ** (dodge * (i - (len(methods) - 1) / 2))
            v, lo, hi = np.array([_bounds(p[1]) for p in points]).T
            colour, scoped = colours[scoped_base(method)], scoped_base(method) != method
            style = {"linestyle": ":", "markerfacecolor": "white"} if scoped else (
                {"linestyle": "--"} if method == "none" else {})
            ax.plot(k, v, marker="o", color=colour, label=method, **style)
            ax.fill_between(k, lo, hi, color=colour, alpha=0.12, linewidth=0)
        ax.set_xscale("log", base=2)
        if ks:
            ax.set_xticks(ks)
            ax.set_xlim(ks[0] / 1.4, ks[-1] * 1.4)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlabel("actions in the session (K)")
        ax.set_title(curve + (f"\n({NOT_RUN}: {', '.join(missing)})" if missing else ""), fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.axhline(0.8, color="#999999", linewidth=0.8, linestyle=":")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("answered as expected (95% band)")
    handles = {label: h for ax in np.atleast_1d(axes) for h, label in zip(*ax.get_legend_handles_labels())}
    fig.tight_layout()
    fig.legend([handles[m] for m in methods if m in handles], [m for m in methods if m in handles],
               loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)  # beside the panels, over no data
    return fig
