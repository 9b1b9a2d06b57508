"""The lm-eval backend scores exactly what the model computes, from the state it is given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import rwkv_jax  # noqa: E402
from convert import save_state  # noqa: E402
from rwkv_jax.chat import chat_prompt, turn  # noqa: E402
from rwkv_jax.model import forward, step  # noqa: E402
from rwkv_jax.state import State  # noqa: E402
from rwkv_lm_eval import RwkvJaxLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ACK = "Noted."  # the benchmark's acknowledgement of a recipient passage


@pytest.fixture(scope="module")
def model():
    return rwkv_jax.load("rime-tiny")


@pytest.fixture(scope="module")
def cases():
    """Dev cases whose recipient is one passage about one person, asked directly: the answer is in the
    state alone."""
    rows = [json.loads(line) for line in (ROOT / "rime/data/dev.jsonl").read_text().splitlines()]
    single = [c for c in rows if len(c["recipient"]["passages"]) == 1
              and c["recipient"]["entity_order"] == [c["entity"]]
              and not c["stack"] and not c["multi"] and not c["params"]["composition_hop"]]
    return single[:8]


def facts_state(model, cases) -> State:
    """One state that has read every case's passage as a user turn with its acknowledgement."""
    text = "".join(turn("user", c["recipient"]["passages"][0]) + turn("assistant", ACK) for c in cases)
    _, state = forward(model.params, model.cfg, jnp.array(model.tokenizer.encode(text)), logits="last")
    return state


def stepwise_logprob(model, state, context: list[int], continuation: list[int]) -> float:
    """The reference: decode one token at a time and add up the continuation's log-probabilities."""
    state = State.zeros(model.cfg) if state is None else state
    total, logits = 0.0, None
    for i, token in enumerate(context + continuation):
        if i >= len(context):
            total += float(jax.nn.log_softmax(logits)[token])
        logits, state = step(model.params, model.cfg, jnp.int32(token), state)
    return total


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


@pytest.mark.parametrize("with_state", [False, True], ids=["zeros", "facts"])
def test_loglikelihoods_equal_token_by_token_decoding(model, cases, with_state):
    state = facts_state(model, cases) if with_state else None
    lm = RwkvJaxLM(model=model, state=state, batch_size=4)
    tok = model.tokenizer
    pairs = [(chat_prompt([("user", c["queries"][0])]), " " + c["value_old"]) for c in cases[:5]]
    pairs.append(("", "Armin competes in cycling."))  # empty context: read after end-of-text
    got = lm.loglikelihood(requests("loglikelihood", pairs))
    for (ctx, cont), (lp, _) in zip(pairs, got, strict=True):
        want = stepwise_logprob(model, state, tok.encode(ctx) or [0], tok.encode(cont))
        assert lp == pytest.approx(want, abs=1e-4)
    texts = ["Adela has violet eyes.", "Everyone arrived early for dinner."]
    rolling = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(t,) for t in texts]))
    for text, lp in zip(texts, rolling, strict=True):
        assert lp == pytest.approx(stepwise_logprob(model, state, [0], tok.encode(text)), abs=1e-4)


def test_greedy_answers_come_from_the_state_it_is_given(model, cases):
    """The old value is the greedy continuation only when the state holds the passages."""
    pairs = [(chat_prompt([("user", c["queries"][0])]), " " + c["value_old"]) for c in cases]
    informed = RwkvJaxLM(model=model, state=facts_state(model, cases), batch_size=8)
    blank = RwkvJaxLM(model=model, batch_size=8)
    greedy_informed = [g for _, g in informed.loglikelihood(requests("loglikelihood", pairs))]
    greedy_blank = [g for _, g in blank.loglikelihood(requests("loglikelihood", pairs))]
    assert sum(greedy_informed) >= 5, greedy_informed
    assert sum(greedy_blank) <= 1, greedy_blank
    texts = informed.generate_until(requests("generate_until", [
        (ctx, {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}) for ctx, _ in pairs]))
    assert sum(c["value_old"] in t for c, t in zip(cases, texts, strict=True)) >= 5, texts


def test_bad_arguments_are_refused(model):
    with pytest.raises(TypeError, match="unknown model_args"):
        RwkvJaxLM(model=model, temperature=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        RwkvJaxLM(model=model, batch_size=0)
    with pytest.raises(ValueError, match="unbatched"):
        RwkvJaxLM(model=model, state=State.zeros(model.cfg, (2,)))
    lm = RwkvJaxLM(model=model)
    with pytest.raises(ValueError, match="unsupported generation arguments"):
        lm.generate_until(requests("generate_until", [("Hi", {"until": ["\n"], "num_beams": 4})]))


def write_task(folder: Path, cases) -> None:
    """A local multiple-choice task: which of the old value and the new one is the person's?"""
    docs = [{"question": chat_prompt([("user", c["queries"][0])]), "choices": [" " + c["value_old"],
             " " + c["value_new"]], "answer": i % 2} for i, c in enumerate(cases)]
    for d in docs:  # the right answer is the old value, placed at `answer`
        if d["answer"] == 1:
            d["choices"].reverse()
    (folder / "facts.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "rime_facts.yaml").write_text(
        "task: rime_facts\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'facts.jsonl'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: answer\n"
        "target_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n")


def test_a_task_scores_the_facts_state_above_the_blank_one(model, cases, tmp_path):
    write_task(tmp_path, cases)
    tasks = TaskManager(include_path=str(tmp_path))
    acc = {}
    for name, state in [("facts", facts_state(model, cases)), ("zeros", None)]:
        out = simple_evaluate(model=RwkvJaxLM(model=model, state=state, batch_size=8), tasks=["rime_facts"],
                              task_manager=tasks)
        acc[name] = out["results"]["rime_facts"]["acc,none"]
    assert acc["facts"] >= 0.75 and acc["facts"] - acc["zeros"] >= 0.25, acc


def test_the_command_line_reads_a_state_file(model, cases, tmp_path):
    write_task(tmp_path, cases)
    path = save_state(facts_state(model, cases), tmp_path / "facts.pth")
    out = subprocess.run(
        [sys.executable, "-m", "rwkv_lm_eval", "run", "--model", "rwkv_jax", "--model_args",
         f"model=rime-tiny,state={path}", "--batch_size", "8", "--tasks", "rime_facts", "--include_path", str(tmp_path),
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results*.json")
    assert json.loads(results.read_text())["results"]["rime_facts"]["acc,none"] >= 0.75
