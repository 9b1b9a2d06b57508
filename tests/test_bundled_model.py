"""The shipped `rime-tiny`: it loads from package data and reads facts from the conversation."""

import pytest

import rime
import rwkv_jax
from rwkv_jax.chat import chat_prompt
from rwkv_jax.train import answer_accuracy


@pytest.fixture(scope="module")
def model():
    return rwkv_jax.load("rime-tiny")


def simple_cases(n: int) -> list[rime.Case]:
    """The first dev cases with one fact to recall: no distractors, overwrites or composition."""
    p = lambda c: c.params.cell
    cases = [c for c in rime.load("dev")
             if p(c).distractor_count == 0 and p(c).overwrite_count == 0 and not p(c).composition_hop]
    return cases[:n]


def answers(model, cases: list[rime.Case]) -> list[str]:
    prompts = [chat_prompt([*rime.recipient_messages(c), ("user", c.queries[0])]) for c in cases]
    return rwkv_jax.generate(model, prompts, max_new_tokens=12).texts


def test_bundled_model_loads_offline_with_its_compact_vocab(model):
    assert "rime-tiny" in rwkv_jax.checkpoint.bundled_models()
    assert model.tokenizer.vocab_size == model.cfg.vocab_size < 65536
    text = "Armin likes the number eighty-eight best. \u00e9\u4e2d"  # bytes outside the corpus still encode
    assert model.tokenizer.decode(model.tokenizer.encode(text)) == text


def test_bundled_model_answers_a_fixed_case_from_the_passage(model):
    case = simple_cases(1)[0]
    assert case.id == "dev-000" and case.value_old == "eighty-eight"
    assert answers(model, [case])[0].strip().lower() == "eighty-eight"


def test_training_eval_scores_exact_answers_without_case_or_spaces(model):
    case = simple_cases(1)[0]  # answered " eighty-eight" (the test above)
    prompt = chat_prompt([*rime.recipient_messages(case), ("user", case.queries[0])])
    pairs = [(prompt, "Eighty-Eight "), (prompt, "eighty"), (prompt, "eighty-eight is it"), (prompt, "eighty-eight")]
    assert answer_accuracy(model, pairs) == 0.5


def test_bundled_model_answers_most_simple_cases(model):
    cases = simple_cases(12)
    hits = [c.value_old.lower() in a.lower() for c, a in zip(cases, answers(model, cases))]
    assert sum(hits) >= 10, hits


def test_transplant_on_bundled_model_moves_the_fact_with_the_upper_layers_wkv(model):
    import numpy as np

    from editing.causal import RIME_FACTS, transplant_table

    table = transplant_table(model.params, model.cfg, model.tokenizer, RIME_FACTS)
    rows = {name: i for i, name in enumerate(table.rows)}
    assert (table.p_old[rows["Baseline"]] > 0.8).all()  # the model holds the old fact
    assert (table.p_new[rows["Ground truth"]] > 0.8).all()
    np.testing.assert_array_equal(table.p_old[rows["ALL"]], table.p_old[rows["Ground truth"]])
    upper_wkv = next(i for name, i in rows.items() if name.endswith("wkv only"))
    assert (table.p_new[upper_wkv] > 0.8).all()  # the fact lives in the upper layers' wkv state
