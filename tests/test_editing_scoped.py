"""Scoped edits: each edit's routing key, and questions routed to the edited or the unedited state."""

import jax
import numpy as np
import pytest
from test_editing_addressed import CASE, OTHER

import rime
import rwkv_jax
from editing import get_method, question, scoped
from editing.calibration import read
from rime.eval import protocol
from rwkv_jax.batch import take
from rwkv_jax.chat import chat_prompt


def test_an_edits_own_question_lies_on_its_key_and_rows_pick_their_state(model, recipients):
    states = recipients
    scope = scoped.scope(states, model, [CASE, OTHER], others=3)
    assert scope.keys.shape == (2, model.cfg.n_embd) and scope.layer == model.cfg.n_layer - 1
    np.testing.assert_allclose(np.linalg.norm(scope.keys, axis=-1), 1.0, rtol=1e-5)
    routed, sim = scoped.route(scope, model, [question("Rohan", "vehicle"), question("Esme", "vehicle")], states,
                               threshold=0.99)
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-4)  # each own question, from its own state
    assert routed.tolist() == [True, True]
    edited = jax.tree.map(lambda x: x + 1.0, states)
    picked = scoped.answering_states(np.array([True, False]), edited, states)
    np.testing.assert_array_equal(picked.wkv[0], edited.wkv[0])
    np.testing.assert_array_equal(picked.wkv[1], states.wkv[1])
    with pytest.raises(ValueError, match="layer must be in 0..2"):
        scoped.scope(states, model, [CASE, OTHER], layer=3)


def test_a_question_about_the_edited_person_gets_the_edit_and_one_about_another_does_not():
    # dev-001: Adela's pickup truck -> rickshaw; Osman keeps his station wagon
    model = rwkv_jax.load("rime-tiny")
    case = next(c for c in rime.load("dev") if c.id == "dev-001")
    (edit,), = protocol.case_edits(case)
    _, state = read(model.params, model.cfg, model.tokenizer, [protocol.recipient_text(case)])
    edited = get_method("delta").apply_many(state, model, [edit])
    scope = scoped.scope(state, model, [edit])
    prompts = [chat_prompt([("user", q)]) for q in (case.queries[0], "What does Osman use to get around?")]
    both = take(state, [0, 0])
    routed, _ = scoped.route(scope, model, prompts, both)
    assert routed.tolist() == [True, False]
    answer_from = scoped.answering_states(routed, take(edited, [0, 0]), both)
    texts = [t.strip() for t in rwkv_jax.generate(model, prompts, state=answer_from, max_new_tokens=8).texts]
    assert texts == ["rickshaw", "station wagon"]
