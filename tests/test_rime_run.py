"""The evaluation protocol end to end on a small random model: rows match the protocol and the public
generation API, batching and sharding do not change them, runs resume exactly, configs are checked."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import pytest

import editing
import rime
import rwkv_jax
from editing import get_method
from rime.__main__ import main
from rime.chat import chat_text
from rime.eval import protocol, rows
from rime.eval.analysis import load
from rime.eval.evaluate import Evaluator
from rime.eval.protocol import Spec
from rime.eval.report import write_report
from rime.eval.runner import Progress, run
from rwkv_jax.chat import chat_prompt

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"fillers": (0, 1), "max_new_tokens": 4}
BATCH = 8


@pytest.fixture(scope="module")
def cases(run_cases):
    return run_cases


@pytest.fixture(scope="module")
def spec():
    return Spec.build(**SETTINGS)


@pytest.fixture(scope="module")
def model_dir(run_model_dir):
    return run_model_dir


@pytest.fixture(scope="module")
def model(model_dir):
    return rwkv_jax.load(model_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model, model_dir, cases, spec):
    """A finished run folder of all three cases, batched."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    run(out, model, str(model_dir), cases, "cases", spec, batch_size=BATCH)
    return out


def assert_same_rows(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert {k: v for k, v in a.items() if k not in ("p_new", "p_old")} == \
            {k: v for k, v in b.items() if k not in ("p_new", "p_old")}
        np.testing.assert_allclose([a["p_new"], a["p_old"]], [b["p_new"], b["p_old"]], rtol=1e-4, atol=1e-7)


def by_key(rs):
    return {(r["case_id"], r["method"], r["variant"], r["filler_mode"], r["filler_turns"], r["kind"], r["index"]): r
            for r in rs}


def test_rows_follow_the_protocol_and_the_generation_api(reference, model, cases, spec):
    written = rows.read_rows(reference)
    assert [tuple(by_key([r]))[0] for r in written] == [k for c in cases for k in protocol.row_keys(c, spec)]
    table = by_key(written)
    case = cases[0]
    q = protocol.questions(case)[0]
    recipient = chat_text(rime.recipient_messages(case))
    correction = get_method("in_context").text(protocol.case_edits(case)[0][0])
    filler = {mode: chat_text(rime.filler_turns(case, mode, 1)) for mode in rime.FILLER_MODES}
    contexts = {
        ("none", protocol.NO_FILLER, 0): recipient,
        ("in_context", protocol.NO_FILLER, 0): recipient + correction,
        ("none", "neutral", 1): recipient + filler["neutral"],
        ("in_context", "adversarial", 1): recipient + correction + filler["adversarial"],
    }
    prompts = [context + chat_prompt([("user", q.text)]) for context in contexts.values()]
    replies = rwkv_jax.generate(model, prompts, max_new_tokens=4).texts
    assert [table[case.id, method, "target", mode, k, "edit", 0]["generation"]
            for method, mode, k in contexts] == replies
    none, delta = (table[case.id, m, "target", "none", 0, "edit", 0] for m in ("none", "delta"))
    wrong = table[case.id, "delta", "wrong_entity", "none", 0, "edit", 0]
    assert len({none["p_new"], delta["p_new"], wrong["p_new"]}) == 3  # each branch is its own state
    assert none["expected"] == list(case.aliases)


def test_batched_rows_equal_batch_one_rows(model, cases, spec):
    def rows_of(batch_size):
        groups = Evaluator(model, spec, batch_size=batch_size).run(cases[:2])
        return [r for group in groups for _, case_rows in group for r in case_rows]

    assert_same_rows(rows_of(1), rows_of(BATCH))


def test_sharded_rows_equal_single_device_rows(tmp_path, reference, model_dir, cases):
    case_file = tmp_path / "cases.jsonl"
    rime.write_jsonl(cases, case_file)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache")}
    command = [sys.executable, "-m", "rime", "run", "--model", str(model_dir), "--cases", str(case_file),
               "--limit", "1", "--filler", "0,1", "--max-new-tokens", "4", "--batch-size", str(BATCH),
               "--out", str(tmp_path / "sharded")]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 cpu device(s)" in done.stdout
    single = [r for r in rows.read_rows(reference) if r["case_id"] == cases[0].id]
    assert_same_rows(rows.read_rows(tmp_path / "sharded"), single)


def test_killed_run_resumes_without_losing_or_repeating_rows(tmp_path, reference, model, model_dir, cases, spec):
    out = tmp_path / "resumed"

    class Killed(Exception):
        pass

    def kill(_):
        raise Killed

    with pytest.raises(Killed):  # killed right after the first group was written
        run(out, model, str(model_dir), cases, "cases", spec, batch_size=BATCH, on_rows=kill)
    first = rows.read_rows(out)
    assert first and {r["case_id"] for r in first} == {cases[0].id}
    # a later kill in the middle of a write: part of the next case, then a torn line
    second = [r for r in rows.read_rows(reference) if r["case_id"] == cases[1].id]
    with open(out / rows.ROWS, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in second[:5]) + json.dumps(second[5])[:40])
    progress = []
    run(out, model, str(model_dir), cases, "cases", spec, batch_size=BATCH, on_start=progress.append)
    assert progress == [Progress(done=len(first), todo=len(rows.read_rows(reference)) - len(first))]
    assert_same_rows(rows.read_rows(out), rows.read_rows(reference))

    before = (out / rows.ROWS).read_bytes()
    added = []
    run(out, model, str(model_dir), cases, "cases", spec, batch_size=BATCH, on_rows=added.append)
    assert added == [] and (out / rows.ROWS).read_bytes() == before  # a finished run is a no-op


def test_resume_with_another_config_is_refused(tmp_path, reference, model, model_dir, cases, spec):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    changed = Spec.build(**{**SETTINGS, "max_new_tokens": 8})
    with pytest.raises(rows.ConfigMismatchError, match=r"max_new_tokens: recorded 4, now 8"):
        run(out, model, str(model_dir), cases, "cases", changed, batch_size=BATCH)
    with pytest.raises(rows.ConfigMismatchError, match=r"dataset\.cases: recorded 3, now 2"):
        run(out, model, str(model_dir), cases[:2], "cases", spec, batch_size=BATCH)
    with pytest.raises(rows.ConfigMismatchError, match=r"methods: recorded"):
        run(out, model, str(model_dir), cases, "cases", Spec.build(["delta"], **SETTINGS), batch_size=BATCH)


def test_cli_rejects_bad_input_with_a_clear_message(tmp_path, capsys, model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"entity": "Ann"}\n')
    assert main(["run", "--model", str(model_dir), "--cases", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert main(["run", "--model", str(model_dir), "--methods", "delta,teleport", "--out", str(tmp_path / "x")]) == 2
    assert "unknown edit method 'teleport'" in capsys.readouterr().err
    assert main(["run", "--model", str(model_dir), "--methods", "delta:strength", "--out", str(tmp_path / "x")]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err


def test_case_edits_carry_each_steps_values_and_the_wrong_entity(cases):
    stacked = cases[1]
    steps = protocol.case_edits(stacked)
    assert [len(s) for s in steps] == [1 + len(stacked.multi), 1]
    chain = [(e.value_old, e.value_new) for e in (steps[0][0], steps[1][0])]
    assert chain == [(s.value_old, s.value_new) for s in stacked.stack]
    assert chain[-1][1] == stacked.value_new
    joint = steps[0][1]
    assert (joint.value_old, joint.value_new) == (stacked.multi[0].value_old, stacked.multi[0].value_new)
    wrong = protocol.case_edits(stacked, stacked.wrong_entity)
    for edit in (e for step in wrong for e in step):
        assert edit.entity == stacked.wrong_entity
        assert stacked.wrong_entity in edit.p_new and stacked.entity not in edit.p_new
    for edit in (e for step in steps + wrong for e in step):
        assert edit.transcript == protocol.recipient_text(stacked)
        assert stacked.value_old in edit.transcript or stacked.stack[0].value_old in edit.transcript


def test_config_records_what_each_method_reads():
    config = Spec.build(["delta", "in_context"]).config()
    assert config["reads"] == {"none": "nothing", "delta": "calibration", "in_context": "context",
                               "random": "calibration"}
    assert config["erases"] == []


def test_spec_adds_the_baseline_and_controls():
    spec = Spec.build(["delta:components=wkv", "null"], fillers=(2,))
    assert [m.label for m in spec.methods] == ["none", "delta(components=wkv)", "null", "random"]
    branches = {(b.label, b.variant) for b in spec.branches()}
    assert ("delta(components=wkv)", "wrong_entity") in branches
    assert not {("null", "wrong_entity"), ("none", "wrong_entity"), ("random", "wrong_entity")} & branches
    assert spec.fillers == (0, 2)
    settings = {b.label: [(s.mode, s.turns) for s in spec.settings(b)]
                for b in spec.branches() if b.variant == "target"}
    assert settings["random"] == [("none", 0)]
    assert settings["null"] == [("none", 0), ("neutral", 2), ("adversarial", 2)]
    with pytest.raises(ValueError, match="filler turn counts"):
        Spec.build(fillers=(7,))


def test_bundled_model_retains_and_reports_on_two_cases(tmp_path):
    model = rwkv_jax.load("rime-tiny")
    plain = [c for c in rime.load("test") if c.params.cell.distractor_count == c.params.cell.overwrite_count == 0
             and not c.params.cell.composition_hop]
    easy = sorted(plain, key=lambda c: c.params.cell.stack_depth + c.params.cell.multi_prop_count)[:2]
    out = tmp_path / "tiny"
    run(out, model, "rime-tiny", easy, "test", Spec.build(), batch_size=64)
    written = rows.read_rows(out)
    assert len(written) == sum(len(protocol.row_keys(c, Spec.build())) for c in easy)
    baseline = [r for r in written if (r["method"], r["filler_turns"], r["kind"]) == ("none", 0, "edit")]
    assert sum(r["old_stripped"] for r in baseline) > len(baseline) / 2  # the unedited model knows the old value
    report = write_report(out).read_text()
    assert "of 2 cases retained" in report and len(list(out.glob("*.png"))) == 5


def test_edits_applied_is_the_length_of_every_bundled_cases_plan():
    for case in rime.load("test") + rime.load("dev"):
        plan = [e for step in protocol.case_edits(case) for e in step]
        assert protocol.edits_applied(case.params.to_dict()) == len(plan), case.id


def test_target_questions_offer_the_other_values_the_passage_states():
    by_id = {c.id: c for c in rime.load("test")}
    # test-002: Beatrix black, Zoltan pale blue, Mika hazel, Solveig amber (the old value, left out),
    # and the target's eyes before two overwrites, slate grey and deep green
    edit, *_ = protocol.questions(by_id["test-002"])
    assert sorted(edit.others) == ["black", "deep green", "hazel", "pale blue", "slate grey"]
    # test-010: the hat the target wore before the overwrite; the joint drink has no other value
    qs = protocol.questions(by_id["test-010"])
    assert [q.others for q in qs if q.kind == "edit"][0] == ("navy blue",)
    assert {q.others for q in qs if q.kind == "joint"} == {()}
    assert {q.others for q in qs if q.kind not in ("edit", "joint")} == {()}
    # test-009 asks for a country: Cezar lives in Tokyo; Mexico City is the old city (Mexico)
    assert protocol.questions(by_id["test-009"])[0].others == ("Japan",)


@editing.register
@dataclasses.dataclass(frozen=True)
class _ForgetNamed(editing.EditMethod):
    """Erases the whole wkv memory when the transcript mentions the case's entity, else nothing."""

    name: ClassVar[str] = "test_forget"
    reads: ClassVar[str] = "transcript"
    erases: ClassVar[bool] = True

    def apply(self, state, model, case):
        return state.replace(wkv=jnp.zeros_like(state.wkv)) if case.entity in case.transcript else state


def test_an_erasing_method_runs_by_both_names_and_gets_its_own_report_section(tmp_path, model, model_dir, cases):
    spec = Spec.build(["test_forget"], fillers=(0,), max_new_tokens=4)
    assert spec.config()["erases"] == ["test_forget"] and "test_forget" in spec.config()["wrong_entity"]
    out = tmp_path / "erase"
    run(out, model, str(model_dir), cases[:1], "cases", spec, batch_size=BATCH)
    table = by_key(rows.read_rows(out))
    case = cases[0]
    for kind, index in ((q.kind, q.index) for q in protocol.questions(case)):
        none, erased, wrong = (table[case.id, m, v, "none", 0, kind, index] for m, v in
                               (("none", "target"), ("test_forget", "target"), ("test_forget", "wrong_entity")))
        assert wrong["generation"] == none["generation"] and wrong["p_old"] == none["p_old"]  # the wrong name
        assert erased["p_old"] != none["p_old"]
        assert isinstance(erased["others_stripped"], bool)
    analysis = load(out)
    assert analysis.erasers == ["test_forget"] and "test_forget" not in analysis.installers
    report = write_report(out).read_text()
    assert "## Erasing methods" in report and (out / "fig6_erasing.png").is_file()
