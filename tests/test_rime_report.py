"""The report's frontier, grouping, erasing section and figures on hand-made rows whose right answers
are known, and the case bootstrap behind every difference of two rates."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from rime.eval import figures
from rime.eval.analysis import Analysis, Difference, Rate, difference
from rime.eval.report import headline_summary, markdown, write_report
from rime.eval.rows import CONFIG, ROWS
from rime.eval.scoring import bootstrap_difference
from rime.eval.sessions import first_below, lifelong_curves

SCORES = ("correct_raw", "correct_stripped", "old_stripped", "new_stripped", "others_stripped")
PARAMS = {"distractor_count": 2, "overwrite_count": 0, "composition_hop": False, "multi_prop_count": 1,
          "stack_depth": 1, "conflict_marker": "none", "recipient_richness": "bare", "edit_style": "canonical_bare",
          "target_position": 0}
# c0, c1: one edit; c2: a stack of two; c3: a stack of two with two joint properties (4 edits)
# c4: its passages overwrite an earlier value
CASE_PARAMS = {"c0": {}, "c1": {}, "c2": {"stack_depth": 2}, "c3": {"stack_depth": 2, "multi_prop_count": 3},
               "c4": {"overwrite_count": 1}}
CORRECTION = "in_context(form=correction)"
CONFIG_DICT = {
    "methods": ["none", "delta", "in_context", CORRECTION, "locate", "erase", "random"],
    "wrong_entity": ["delta", "in_context", CORRECTION, "locate", "erase"],
    "reads": {"none": "nothing", "delta": "calibration", "in_context": "context", CORRECTION: "context",
              "locate": "transcript", "erase": "calibration", "random": "calibration"},
    "erases": ["erase"],
    "fillers": [0, 1], "modes": ["neutral", "adversarial"], "max_new_tokens": 16, "seeds": {"random": 0},
    "stop": "\n\n", "model": {"ref": "m", "params_sha256": "0" * 64},
    "dataset": {"source": "s", "cases": 5, "sha256": "1" * 64}, "package": {"rwkv-jax": "0"}, "format": 1,
}


def rows_of(case, method, verdicts, kind="edit", variant="target", turns=0):
    """One row per verdict: a set of score fields that are true (the others false)."""
    mode = "neutral" if turns else "none"
    return [{"case_id": case, "method": method, "variant": variant, "filler_mode": mode, "filler_turns": turns,
             "kind": kind, "index": i, **{f: f in true for f in SCORES}, "p_new": 0.5, "p_old": 0.1,
             "answer_tokens": 1, "params": {**PARAMS, **CASE_PARAMS[case]}}
            for i, true in enumerate(verdicts)]


OK, OLD, NEW, OTHERS, NOTHING = {"correct_stripped"}, {"old_stripped"}, {"new_stripped"}, {"others_stripped"}, set()
BLED = {"new_stripped"}  # a same-value distractor answered with the new value


@pytest.fixture
def run_rows():
    rs = []
    for case in ("c0", "c1", "c2", "c3"):
        rs += rows_of(case, "none", [OLD, OLD])
        rs += rows_of(case, "none", [OK, OK], kind="other_entity")
    rs += rows_of("c4", "none", [OLD, NOTHING])  # not a majority: dropped by the retention filter
    rs += rows_of("c4", "delta", [OK, OK])
    # delta: edits everywhere, but so does its wrong-entity variant on c0 and c1
    for case in ("c0", "c1", "c2", "c3"):
        rs += rows_of(case, "delta", [OK, OK])
        rs += rows_of(case, "delta", [OK, OK] if case in ("c0", "c1") else [OLD, OLD], variant="wrong_entity")
    rs += rows_of("c0", "delta", [BLED], kind="same_value_distractor")
    rs += rows_of("c1", "delta", [OK], kind="same_value_distractor")
    rs += rows_of("c0", "delta", [BLED], kind="same_value_distractor", variant="wrong_entity")
    rs += rows_of("c1", "delta", [BLED], kind="same_value_distractor", variant="wrong_entity")
    # delta's probes: intact with one edit, one of two broken with two, both broken with four
    for case, probes in {"c0": [OK, OK], "c1": [OK, OK], "c2": [OK, NOTHING], "c3": [NOTHING, NOTHING]}.items():
        rs += rows_of(case, "delta", probes, kind="other_entity")
    for method in ("in_context", CORRECTION, "locate"):
        for case in ("c0", "c1", "c2", "c3"):
            rs += rows_of(case, method, [OK, OK] if method != CORRECTION else [OK, OLD])
            rs += rows_of(case, method, [OLD, OLD], variant="wrong_entity")
    # erase: the old value is gone in three of four cases; by the wrong name it survives
    for case, answers in {"c0": [OLD, OLD], "c1": [NEW, OTHERS], "c2": [OTHERS, NOTHING],
                          "c3": [NOTHING, NOTHING]}.items():
        rs += rows_of(case, "erase", [a | ({"correct_stripped"} if a == NEW else set()) for a in answers])
        rs += rows_of(case, "erase", [OLD, OLD] if case != "c3" else [OLD, NOTHING], variant="wrong_entity")
        rs += rows_of(case, "erase", [OK, NOTHING], kind="other_entity")
    rs += rows_of("c0", "erase", [OLD, NOTHING], kind="joint")
    rs += rows_of("c0", "erase", [OLD, NOTHING], turns=1)
    for case in ("c0", "c1", "c2", "c3"):
        rs += rows_of(case, "random", [OLD, OLD])
    rs += rows_of("c0", "delta", [OK], turns=1)
    return rs


@pytest.fixture
def analysis(run_rows):
    return Analysis(run_rows, CONFIG_DICT)


def test_bootstrap_resamples_cases_not_rows():
    # 10 cases of 10 rows each, every case all right or all wrong: the rows of a case move together
    a = np.array([[10, 10]] * 5 + [[0, 10]] * 5)
    b = np.zeros_like(a)
    b[:, 1] = 10
    value, lo, hi = bootstrap_difference(a, b)
    assert value == 0.5
    # resampling cases: the SD of a mean of 10 fair coins, 0.16; resampling rows would give 0.05
    assert lo <= 0.25 and hi >= 0.75
    assert (value, lo, hi) == bootstrap_difference(a, b)  # a fixed seed


def test_bootstrap_pairs_the_two_rates_over_the_same_cases():
    a = np.array([[1, 2], [2, 2], [0, 2], [1, 3]])
    assert bootstrap_difference(a, a) == (0.0, 0.0, 0.0)  # paired: one draw of cases for both rates
    shifted = a.copy()
    shifted[:, 0] = shifted[:, 1]  # every row of B right: A - B = rate(A) - 1 in every draw's cases
    value, lo, hi = bootstrap_difference(a, shifted)
    assert value == pytest.approx(4 / 9 - 1) and lo < value < hi <= 0
    assert all(np.isnan(bootstrap_difference(a, np.zeros_like(a))))
    with pytest.raises(ValueError, match="cases, 2"):
        bootstrap_difference(a, a[:3])


def test_retention_drops_are_listed_by_id(analysis):
    assert analysis.retained == {"c0", "c1", "c2", "c3"} and analysis.dropped == ["c4"]
    text = markdown(analysis, {**figures.FILES, "erase": figures.ERASE_FILE})
    assert "Dropped (1): `c4`." in text


def test_unedited_recall_counts_every_case_before_the_filter_and_splits_out_overwrites(analysis):
    assert analysis.unedited_recall() == Rate(9, 10)  # c0-c3 answer the old value twice, c4 once
    assert analysis.unedited_recall(True) == Rate(1, 2) and analysis.unedited_recall(False) == Rate(8, 8)
    text = markdown(analysis, {**figures.FILES, "erase": figures.ERASE_FILE})
    assert f"Unedited target recall, every case: {Rate(9, 10)}; cases whose passages overwrite" in text


def test_frontier_measures_specificity_bleed_and_probes_against_the_unedited_model(analysis):
    a = analysis
    assert a.edit("delta") == Rate(8, 8)  # c4 is not retained
    assert a.wrong_entity("delta") == Rate(4, 8)
    spec = a.specificity("delta")
    assert spec.value == 0.5 and spec.cases == 4
    assert spec.lo < 0.5 < spec.hi
    assert a.bleed("delta") == Rate(1, 2)
    assert a.bleed("delta", "wrong_entity") == Rate(2, 2)
    assert a.probes("delta") == Rate(6, 10)  # the same-value distractors are probes too
    change = a.probe_change("delta")
    assert change.value == pytest.approx(6 / 10 - 1) and change.hi < 0
    table = headline_summary(a)
    assert "| delta | 100% [68, 100] n=8 | 50% [22, 78] n=8 | +50.0 pts [" in table
    assert "| 50% [9, 91] n=2 | 100% [34, 100] n=2 | 60% [31, 83] n=10 | -40.0 pts [" in table
    random_row = next(line for line in table.splitlines() if line.startswith("| random |") and "not run" in line)
    assert random_row.count("not run") == 3  # no wrong-entity variant: success, specificity, bleed


def test_probe_preservation_by_number_of_edits(analysis):
    bins = {name: Rate(sum(r["correct_stripped"] for r in rs), len(rs))
            for name, rs in analysis.probes_by_edits("delta").items()}
    assert bins == {"1 edit": Rate(5, 6), "2 edits": Rate(1, 2), "3-5 edits": Rate(0, 2)}  # c0's distractor bled
    text = markdown(analysis, {**figures.FILES, "erase": figures.ERASE_FILE})
    section = text.split("## Probe preservation by number of edits applied")[1].split("##")[0]
    delta = next(line for line in section.splitlines() if line.startswith("| delta |"))
    assert "| 83% [44, 97] n=6 | 50% [9, 91] n=2 | 0% [0, 66] n=2 | -16.7 pts [" in delta
    assert "-100.0 pts [-100.0, -100.0] n=1 cases |" in delta  # 3-5 edits: c3 alone


def test_tables_list_each_read_group_apart_and_every_in_context_form(analysis):
    assert [(reads, methods) for reads, methods in analysis.groups(analysis.installers)] == [
        ("nothing", ["none"]), ("calibration", ["delta", "random"]), ("context", ["in_context", CORRECTION]),
        ("transcript", ["locate"])]
    summary = headline_summary(analysis)
    headline = summary.split("Frontier at ft=0:")[0]
    blocks = headline.split("(reads `")[1:]
    assert [b.split("`")[0] for b in blocks] == ["nothing", "calibration", "context", "transcript"]
    context = blocks[2]
    assert "| in_context | 100% [68, 100] n=8 |" in context
    assert f"| {CORRECTION} | 50% [22, 78] n=8 |" in context
    assert "| delta |" not in context and "| locate |" not in context


def test_erasing_methods_are_judged_apart_on_the_old_value(analysis):
    a = analysis
    assert "erase" not in a.installers and "erase" not in a.edit_methods and "erase" not in a.filler_methods
    assert a.answers("erase") == {"old value": Rate(2, 8), "new value": Rate(1, 8),
                                  "another passage value": Rate(2, 8), "other text": Rate(3, 8)}
    assert a.answers("erase", "wrong_entity")["old value"] == Rate(7, 8)  # the wrong name leaves it
    summary = headline_summary(a)
    headline, erasing = summary.split("Erasing methods at ft=0:")
    assert "| erase |" not in headline
    row = next(line for line in erasing.splitlines() if line.startswith("| erase |"))
    assert row.startswith("| erase | 25% [7, 59] n=8 | 12% [2, 47] n=8 | 25% [7, 59] n=8 | 38% [14, 69] n=8 | "
                          "88% [53, 98] n=8 | 50% [9, 91] n=2 | 50% [22, 78] n=8 | -50.0 pts [")
    text = markdown(a, {**figures.FILES, "erase": figures.ERASE_FILE})
    before_erasing = text.split("## Erasing methods")[0]
    assert "| erase |" not in before_erasing.split("## Frontier")[1]
    assert "| erase |" not in text.split("## Difficulty by control axis")[1]
    after_filler = text.split("The old value on the target's questions after filler turns")[1]
    assert "| erase | neutral | 25% [7, 59] n=8 | 50% [9, 91] n=2 |" in after_filler


def test_configs_without_reads_or_erases_still_report():
    config = {k: v for k, v in CONFIG_DICT.items() if k not in ("reads", "erases")}
    rs = rows_of("c0", "none", [OLD]) + rows_of("c0", "delta", [OK])
    a = Analysis(rs, {**config, "methods": ["none", "delta"], "wrong_entity": ["delta"]})
    assert a.groups(a.installers) == [("not recorded", ["none", "delta"])] and a.erasers == []
    assert "not recorded" in headline_summary(a)


def _points(ax) -> set[tuple[float, float]]:
    """Every data point the axis marks (the markers of its error bars, not its reference lines)."""
    return {tuple(p) for line in ax.lines if line.get_marker() == "o" for p in line.get_xydata()}


def _texts(ax) -> dict[float, str]:
    return {t.get_position()[1]: t.get_text() for t in ax.texts}


def test_frontier_figure_marks_unmeasured_cells_instead_of_drawing_them(analysis):
    fig = figures.frontier(analysis)
    edit, specificity, *_, probes = fig.axes
    rows = [label.get_text() for label in edit.get_yticklabels()]
    assert rows == ["none", "delta", "random", "in_context", CORRECTION, "locate"]
    at = {m: float(i) for i, m in enumerate(rows)}
    assert (1.0, at["delta"]) in _points(edit) and (0.5, at["delta"]) in _points(specificity)
    # no wrong-entity variant: no point at all on random's or none's row, "not run" in its place
    for m in ("none", "random"):
        assert all(y != at[m] for _, y in _points(specificity))
        assert _texts(specificity)[at[m]] == "not run"
    assert (0.0, at["random"]) in _points(edit)  # measured zeros are drawn
    unedited = [line for line in probes.lines if line.get_linestyle() == "--"]
    assert [line.get_xdata()[0] for line in unedited] == [1.0]
    assert fig.legends and not any(ax.get_legend() for ax in fig.axes)  # the legend sits outside the data
    plt.close(fig)


def test_headline_figure_draws_no_bar_for_an_unmeasured_setting(analysis):
    fig = figures.headline(analysis)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    # four settings for six installing methods: every edit accuracy at ft=0, the probes of none and
    # delta (the others have no probe rows here) and delta's neutral ft=1 point were measured
    assert len(bars) == 6 + 2 + 1
    assert [t.get_text() for t in ax.texts].count("not run") == 4 * 6 - len(bars)
    plt.close(fig)


def test_erasing_figure_shows_answers_by_name_and_probes(analysis):
    fig = figures.erasing(analysis)
    answers, probes = fig.axes
    labels = [label.get_text() for label in answers.get_yticklabels()]
    assert labels == ["none (unedited)", "erase", "erase, wrong name"]
    widths = {}
    for bar in answers.patches:
        widths.setdefault(round(bar.get_y() + bar.get_height() / 2), []).append(bar.get_width())
    assert widths[1] == pytest.approx([2 / 8, 1 / 8, 2 / 8, 3 / 8])
    assert widths[2] == pytest.approx([7 / 8, 0, 0, 1 / 8])
    assert (4 / 8, 1.0) in _points(probes)
    plt.close(fig)


def test_difficulty_figure_starts_its_axis_below_the_lowest_interval_so_high_rates_separate(analysis):
    fig = figures.difficulty(analysis)
    for ax in fig.axes:
        low, high = ax.get_xlim()
        xs = [x for x, _ in _points(ax)]
        bounds = [b for line in ax.collections for seg in line.get_segments() for b in seg[:, 0]]
        assert xs and min(bounds) >= low and max(xs) <= high <= 1.02
        assert low == np.floor(10 * min(bounds)) / 10  # not a fixed 0: points near 100% get the width
    plt.close(fig)


def test_decay_legend_names_each_method_and_mode_once_below_the_plot(analysis):
    fig = figures.decay(analysis)
    ax = fig.axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == [*analysis.filler_methods, "neutral filler", "adversarial filler"]
    fig.canvas.draw()
    box, plot = legend.get_window_extent(), ax.get_window_extent()
    assert box.y1 <= plot.y0  # under the axes, over no curve
    plt.close(fig)


def test_report_writes_every_figure_it_links(tmp_path, run_rows):
    (tmp_path / CONFIG).write_text(json.dumps(CONFIG_DICT))
    (tmp_path / ROWS).write_text("".join(json.dumps(r) + "\n" for r in run_rows))
    text = write_report(tmp_path).read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == sorted([*figures.FILES.values(), figures.ERASE_FILE])
    assert all(f"]({name})" in text for name in pngs)


def test_difference_of_rows_prints_points_interval_and_cases():
    rows = rows_of("c0", "delta", [OK, OK]) + rows_of("c1", "delta", [OK, NOTHING])
    d = difference(rows, rows, "correct_stripped", "old_stripped")
    assert d == Difference(0.75, 0.5, 1.0, 2)
    assert str(d) == "+75.0 pts [+50.0, +100.0] n=2 cases"
    assert str(difference([], rows)) == "n/a"


def test_the_lifelong_figure_draws_measured_points_only_with_their_bands():
    rows = [{"method": m, "actions": k, "role": role, "correct": ok}
            for m, k, role, ok in [("delta", 1, "reliability", True), ("delta", 1, "locality", True),
                                   ("delta", 4, "reliability", False), ("delta", 4, "retention", True),
                                   ("delta", 4, "locality", False), ("none", 1, "locality", True),
                                   ("none", 4, "locality", True)]]
    curves = lifelong_curves(rows)
    assert curves["retention"]["delta"] == [(4, Rate(1, 1))]  # no retention question at K = 1
    assert curves["reliability"]["delta"] == [(1, Rate(1, 1)), (4, Rate(1, 2))]
    assert first_below(curves["reliability"]["delta"]) == 4 and first_below([(1, Rate(1, 1))]) is None
    fig = figures.lifelong(curves)
    reliability, retention, locality = fig.axes
    (delta_line, none_line) = reliability.get_lines()[:1] + locality.get_lines()[1:2]
    assert np.allclose(delta_line.get_xdata(), [1, 4], rtol=0.1) and list(delta_line.get_ydata()) == [1.0, 0.5]
    assert [len(line.get_xdata()) for line in retention.get_lines() if line.get_label() == "delta"] == [1]
    assert not np.allclose(delta_line.get_xdata(), none_line.get_xdata())  # set apart, never on top
    assert "not run: none" in retention.get_title() and "not run" not in locality.get_title()
    assert none_line.get_label() == "none" and list(none_line.get_ydata()) == [1.0, 1.0]
    assert len(reliability.collections) == 1  # delta's band; none has no reliability point
    plt.close(fig)
