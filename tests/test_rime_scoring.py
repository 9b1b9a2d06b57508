"""Scoring (substrings, aliases, think stripping), Wilson intervals, and the report's metrics on
hand-made rows whose right answers are known."""

import json
import math

import pytest

from rime.eval.analysis import OUTCOMES, Analysis, Rate
from rime.eval.report import headline_table, write_report
from rime.eval.rows import CONFIG, ROWS
from rime.eval.scoring import contains_any, score, wilson


def test_matching_ignores_case_and_accepts_any_alias():
    assert contains_any("It is FIGURE Skating, I think.", ["figure skating"])
    assert contains_any("a small mammal vet", ["small animal vet", "small mammal"])
    assert not contains_any("figure", ["figure skating"])  # a multi-token value must appear whole
    assert not contains_any("skating", ["figure skating"])


def test_matching_rejects_empty_answers():
    with pytest.raises(ValueError, match="non-empty"):
        contains_any("anything", ["", "x"])
    with pytest.raises(TypeError, match="not one string"):
        contains_any("anything", "x")


def test_another_passage_value_is_scored_only_when_the_question_has_one():
    answer = "She drives a jeep."
    assert score(answer, ["van"], ["car"], ["van"], ["scooter", "jeep"]).others_stripped
    assert not score(answer, ["van"], ["car"], ["van"], ["scooter"]).others_stripped
    assert not score(answer, ["van"], ["car"], ["van"]).others_stripped  # none to find


def test_think_spans_count_only_in_raw_scoring():
    s = score("<think>maybe figure skating</think> archery", ["figure skating"], ["archery"], ["figure skating"])
    assert (s.correct_raw, s.correct_stripped, s.old_stripped, s.new_stripped) == (True, False, True, False)
    assert s.stripped == "archery"
    unclosed = score("Archery <think>or Figure Skating", ["figure skating"], ["archery"], ["figure skating"])
    assert (unclosed.correct_raw, unclosed.correct_stripped, unclosed.old_stripped) == (True, False, True)


def test_wilson_interval_known_values():
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson(3, 20)
    assert (lo, hi) == pytest.approx(tuple(1 - x for x in reversed(wilson(17, 20))))
    assert wilson(0, 0) == (0.0, 1.0)
    for n in range(1, 60):
        assert wilson(n, n)[1] == 1.0 and wilson(0, n)[0] == 0.0
        assert all(lo <= k / n <= hi for k in range(n + 1) for lo, hi in [wilson(k, n)])
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_rate_prints_percent_interval_and_count():
    assert str(Rate(5, 10)) == "50% [24, 76] n=10"
    assert str(Rate(0, 0)) == "n/a" and math.isnan(Rate(0, 0).value)


PARAMS = {"distractor_count": 2, "overwrite_count": 0, "composition_hop": False, "multi_prop_count": 1,
          "stack_depth": 1, "conflict_marker": "none", "recipient_richness": "bare", "edit_style": "canonical_bare",
          "target_position": 0}
CONFIG_DICT = {
    "methods": ["none", "delta", "random"], "wrong_entity": ["delta"], "fillers": [0, 1],
    "modes": ["neutral", "adversarial"], "max_new_tokens": 16, "seeds": {"random": 0}, "stop": "\n\n",
    "model": {"ref": "m", "params_sha256": "0" * 64}, "dataset": {"source": "s", "cases": 4, "sha256": "1" * 64},
    "package": {"rwkv-jax": "0"}, "format": 1,
}


def make_row(case, method, flags, kind="edit", variant="target", mode="none", turns=0, field="correct_stripped",
             dc=2):
    """One row per flag, scored `field` = flag (the other scores false)."""
    out = []
    for i, flag in enumerate(flags):
        scores = {f: False for f in ("correct_raw", "correct_stripped", "old_stripped", "new_stripped")}
        scores[field] = flag
        out.append({"case_id": case, "method": method, "variant": variant, "filler_mode": mode,
                    "filler_turns": turns, "kind": kind, "index": i, **scores, "p_new": 0.5, "p_old": 0.1,
                    "answer_tokens": 1, "params": {**PARAMS, "distractor_count": dc}})
    return out


@pytest.fixture
def analysis_rows():
    rs = []
    for case in ("c0", "c1", "c2"):
        rs += make_row(case, "none", [True, True, True], field="old_stripped")
    rs += make_row("c3", "none", [False, False, True], field="old_stripped")  # excluded by the filter
    for case, flags in {"c0": [1, 1, 1], "c1": [1, 1, 0], "c2": [0, 0, 0], "c3": [1, 1, 1]}.items():
        rs += make_row(case, "delta", [bool(f) for f in flags], dc=0 if case == "c0" else 2)
    rs += make_row("c0", "delta", [True, False, False], variant="wrong_entity")
    for case in ("c1", "c2"):
        rs += make_row(case, "delta", [False, False, False], variant="wrong_entity")
    # same-value distractors: c0's answer bled to the new value, c1 and c2 kept the old one
    rs += make_row("c0", "delta", [True], kind="same_value_distractor", field="new_stripped")
    rs += make_row("c1", "delta", [True], kind="same_value_distractor")
    rs += make_row("c2", "delta", [True], kind="same_value_distractor")
    rs += make_row("c0", "delta", [True, False, False], mode="neutral", turns=1)
    return rs


def test_retention_filter_and_specificity_controls(analysis_rows):
    a = Analysis(analysis_rows, CONFIG_DICT)
    assert a.retained == {"c0", "c1", "c2"}
    assert a.edit("delta") == Rate(5, 9)
    assert a.wrong_entity("delta") == Rate(1, 9)
    assert a.specificity("delta").value == pytest.approx(4 / 9)
    assert a.bleed("delta") == Rate(1, 3)
    assert a.probes("delta") == Rate(2, 3)
    assert a.clean("delta") == Rate(3, 3)  # only c0 has no distractors
    assert a.after_fillers("delta", "neutral") == Rate(1, 3)
    assert a.decay("delta")["neutral"] == [(0, Rate(5, 9)), (1, Rate(1, 3))]
    assert a.by_axis("delta")["distractor_count"] == {"0": Rate(3, 3), "2": Rate(2, 6)}


def test_headline_filler_column_is_the_fewest_turns_measured(analysis_rows):
    rows = [dict(r, filler_turns=6) if r["filler_turns"] == 1 else r for r in analysis_rows]
    a = Analysis(rows, {**CONFIG_DICT, "fillers": [0, 6]})
    assert a.first_filler == 6
    assert a.after_fillers("delta", "neutral") == Rate(1, 3)
    assert "ft=6 neutral" in headline_table(a) and "ft=1" not in headline_table(a)


def test_blast_radius_counts_case_verdicts(analysis_rows):
    counts = Analysis(analysis_rows, CONFIG_DICT).blast("delta")
    # c0: edit ok, distractor bled; c1: edit ok (2 of 3), distractor kept; c2: edit failed, kept
    assert dict(zip(OUTCOMES, counts["same_value_distractor"])) == {
        "edit ok, probe ok": 1, "edit ok, probe broken": 1, "edit failed, probe ok": 1, "edit failed, probe broken": 0}
    assert counts["other_entity"] == [0, 0, 0, 0]


def test_report_writes_markdown_tables_and_five_figures(tmp_path, analysis_rows):
    (tmp_path / CONFIG).write_text(json.dumps(CONFIG_DICT))
    (tmp_path / ROWS).write_text("".join(json.dumps(r) + "\n" for r in analysis_rows))
    path = write_report(tmp_path)
    text = path.read_text()
    assert "3 of 4 cases retained" in text
    assert "| delta | 56% [27, 81] n=9 | 67% [21, 94] n=3 |" in text
    assert "+44.4 pts [+0.0, +66.7] n=3 cases" in text and "33% [6, 79] n=3" in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 5 and all(f"]({name})" in text for name in pngs)
    assert all((tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in pngs)
