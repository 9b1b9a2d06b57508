"""Sessions through the model: actions applied in order on the live state, reverts exact, methods
blind to the queries, groups equal to sessions run alone, and the tables' intervals."""

import dataclasses
from typing import ClassVar

import numpy as np
import pytest
from test_rime_sessions import HAND, truncated

import rime
import rwkv_jax
from editing import EditMethod, get_method
from rime.__main__ import main
from rime.eval.evaluate import Evaluator
from rime.eval.protocol import Spec
from rime.eval.rows import read_rows
from rime.eval.scoring import wilson
from rime.eval.sessions import (
    SessionEvaluator,
    action_edit,
    cost_table,
    in_effect,
    method_table,
    recall_table,
    session_report,
    session_text,
)
from rwkv_jax.state import COMPONENTS


@pytest.fixture(scope="module")
def evaluator():
    return Evaluator(rwkv_jax.load("rime-tiny"), Spec.build([]), batch_size=8)


def edit_then_revert():
    """HAND's first edit and, right after it, its revert: the state must come back exactly."""
    data = truncated(3, [("reverted", "tabby cat"), ("locality", "Paris"), ("locality", "tabby cat"),
                         ("locality", "Lyon")])
    data["edits"] = [data["edits"][0], data["edits"][2]]
    data["edits"][0]["fillers"] = []
    data["edits"][1]["reverts"] = 0
    return rime.Session.from_dict(data)


def same(a, b):
    return all(np.array_equal(getattr(a, c), getattr(b, c)) for c in COMPONENTS)


@pytest.mark.parametrize("name", ["delta", "in_context"])
def test_an_edit_reverted_right_after_restores_the_passage_state_bit_exactly(evaluator, name):
    session = edit_then_revert()
    final = SessionEvaluator(evaluator, get_method(name)).final_states([session])
    from_passages = evaluator.read([session_text(session)], rwkv_jax.State.zeros(evaluator.model.cfg))
    assert same(final, from_passages)


@dataclasses.dataclass(frozen=True)
class Spy(EditMethod):
    """Records what it is given and leaves the state alone."""

    name: ClassVar[str] = "spy"
    seen: list = dataclasses.field(default_factory=list, compare=False, hash=False)

    def apply(self, state, model, case):
        self.seen.append(case)
        return state


def test_methods_get_each_edit_in_order_and_never_a_query(evaluator):
    session = rime.Session.from_dict(HAND)
    spy = Spy()
    rows = [r for group in SessionEvaluator(evaluator, spy).run([session]) for r in group]
    assert spy.seen == [action_edit(session, 0), action_edit(session, 1)]  # the revert and erase are not its own
    fields = [v for case in spy.seen for v in dataclasses.astuple(case)]
    assert not {q.query for q in session.queries} & {v for v in fields if isinstance(v, str)}
    assert [(r["role"], r["expected"]) for r in rows] == [(q.role, q.expected) for q in session.queries]


def test_a_group_of_sessions_reads_like_each_session_alone(evaluator):
    sessions = rime.load("session_dev")[:3]
    runner = SessionEvaluator(evaluator, get_method("delta"))
    together = runner.final_states(sessions)
    for i, session in enumerate(sessions):
        alone = runner.final_states([session])
        np.testing.assert_allclose(together.wkv[i], alone.wkv[0], rtol=1e-4, atol=1e-5)


def test_tables_report_wilson_intervals_per_size_and_role():
    rows = [{"case_id": f"s{i // 4}", "method": "none", "facts": 6, "actions": 2, "role": role,
             "correct": ok, "stated_kept": kept}
            for i, (role, ok, kept) in enumerate([("reliability", False, True), ("retention", False, True),
                                                   ("locality", True, True), ("locality", False, False)] * 2)]
    lo, hi = wilson(6, 8)
    assert f"| 6 | 2 | 75% [{lo:.0%}, {hi:.0%}] (n=8) |" in recall_table(rows)
    lo, hi = wilson(2, 4)
    table = method_table(rows)
    assert f"| none | 2 | 0% [0%, {wilson(0, 4)[1]:.0%}] (n=4) |" in table
    assert f"50% [{lo:.0%}, {hi:.0%}] (n=4)" in table


def test_rime_run_on_a_session_split_writes_rows_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--split", "session_dev", "--limit", "2", "--methods", "in_context", "--out", str(out)]
    assert main(argv) == 0
    rows = read_rows(out)
    sessions = rime.load("session_dev")[:2]
    assert len(rows) == 3 * sum(len(s.queries) for s in sessions)  # none, in_context, random
    assert {r["method"] for r in rows} == {"none", "in_context", "random"}
    assert "## Unedited recall per fact count" in (out / "report.md").read_text()
    lines = (out / "rows.jsonl").read_text().splitlines(keepends=True)
    (out / "rows.jsonl").write_text("".join(lines[:-5]) + lines[-5][:9])  # the last group cut mid-line
    assert main(argv) == 0
    key = lambda r: (r["case_id"], r["method"], r["index"])
    assert sorted(read_rows(out), key=key) == sorted(rows, key=key)  # the cut session redone, nothing repeated
    capsys.readouterr()
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert main([*argv[:-1], str(out), "--methods", "delta"]) == 2  # another config is refused


def test_in_effect_drops_reverted_edits_and_keeps_erases():
    assert in_effect(rime.Session.from_dict(HAND)) == [1, 3]  # edit 0 is reverted by action 2


def test_scoped_answers_come_from_the_edited_state_where_routed_and_the_unedited_one_elsewhere(evaluator):
    sessions = rime.load("session_dev")[:6]
    delta = get_method("delta")
    rows = lambda runner: [r for group in runner.run(sessions) for r in group]
    scoped, plain = rows(SessionEvaluator(evaluator, delta, scoped=True)), rows(SessionEvaluator(evaluator, delta))
    unedited = rows(SessionEvaluator(evaluator, get_method("none")))
    assert {r["method"] for r in scoped} == {"scoped(delta)"}
    routed = [r["routed"] for r in scoped]
    assert any(routed) and not all(routed)
    for s, p, u in zip(scoped, plain, unedited, strict=True):
        assert s["generation"] == (p if s["routed"] else u)["generation"], s["query"]
        assert s["route_expected"] == (s["role"] in ("reliability", "retention", "erased"))
    # the edited fact's question goes to the edited state, and no question about a fact no action
    # touched does, the edited people's other facts included
    assert all(r["routed"] for r in scoped if r["role"] == "reliability")
    assert not any(r["routed"] for r in scoped if r["role"] == "locality")
    assert any(q.role == "locality" and q.entity in {e.entity for e in s.edits} for s in sessions for q in s.queries)
    assert "## Routing of the scoped methods" in session_report(scoped)
    # the cost: one live state, and scoped a second state plus a float32 key and centre per change in effect
    cfg = evaluator.model.cfg
    state = 4 * cfg.n_layer * (cfg.n_head * cfg.head_size ** 2 + 2 * cfg.n_embd)
    by_id = {s.id: s for s in sessions}
    assert {r["kept_bytes"] for r in plain} == {state}
    assert all(r["kept_bytes"] == 2 * state + 8 * cfg.n_embd * len(in_effect(by_id[r["case_id"]])) for r in scoped)
    assert f"| delta | {state / 1024:,.1f} KiB (1.00 states) |" in cost_table(scoped + plain)


def test_a_scoped_session_run_records_both_variants_and_resumes(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--split", "session_dev", "--limit", "1", "--methods", "delta", "--scoped", "--out", str(out)]
    assert main(argv) == 0
    rows = read_rows(out)
    assert {r["method"] for r in rows} == {"none", "delta", "random", "scoped(delta)", "scoped(random)"}
    assert main(argv) == 0 and len(read_rows(out)) == len(rows)
    assert main(argv[:-3] + ["--out", str(out)]) == 2  # without --scoped it is another config
    assert (out / "fig_sessions_lifelong.png").is_file()
    assert main(["run", "--split", "dev", "--limit", "1", "--scoped", "--out", str(tmp_path / "single")]) == 2
