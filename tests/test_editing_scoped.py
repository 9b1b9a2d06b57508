"""Scoped edits: each edit's routing key, and questions routed to the edited or the unedited state."""

import dataclasses

import jax
import numpy as np
import pytest
from test_editing_addressed import CASE, OTHER

import editing
import rime
import rwkv_jax
from editing import get_method, question, scoped
from editing.calibration import read
from rime.eval import protocol
from rwkv_jax.batch import Reader, take
from rwkv_jax.chat import chat_prompt

PROPERTIES = ("vehicle", "city", "pet", "job", "sport")
CASES = [dataclasses.replace(c, properties=PROPERTIES) for c in (CASE, OTHER)]


def test_an_edits_own_question_lies_on_its_key_and_rows_pick_their_state(model, recipients):
    states = recipients
    scope = scoped.scope(states, model, CASES, others=3)
    assert scope.keys.shape == (2, model.cfg.n_embd) and scope.layer == model.cfg.n_layer
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
        scoped.scope(states, model, CASES, layer=3)
    with pytest.raises(ValueError, match="Rohan's vehicle has no CaseEdit.properties"):
        scoped.scope(states, model, [CASE, OTHER], others=3)
    with pytest.raises(ValueError, match=r"can draw 0..4 other properties \(CaseEdit.properties\)"):
        scoped.scope(states, model, CASES, others=5)


def test_a_key_is_centred_on_other_people_and_on_the_same_persons_other_properties(model, recipients):
    scope = scoped.scope(recipients, model, CASES[:1], others=2)
    people, props = editing.other_people("Rohan", CASE.people, 2), editing.other_properties("vehicle", PROPERTIES, 2)
    texts = [question(n, "vehicle") for n in people] + [question("Rohan", p) for p in props]
    rows = take(recipients, [0] * len(texts))
    h = scoped.streams(Reader(model.params, model.cfg), model.tokenizer, texts, rows, model.cfg.n_layer)
    np.testing.assert_allclose(scope.centres[0], np.asarray(h).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_only_a_question_about_the_edited_fact_gets_the_edit():
    # dev-001: Adela's pickup truck -> rickshaw; Osman keeps his station wagon, Adela her violet eyes
    model = rwkv_jax.load("rime-tiny")
    case = next(c for c in rime.load("dev") if c.id == "dev-001")
    (edit,), = protocol.case_edits(case)
    _, state = read(model.params, model.cfg, model.tokenizer, [protocol.recipient_text(case)])
    edited = get_method("delta").apply_many(state, model, [edit])
    scope = scoped.scope(state, model, [edit])
    asked = (*case.queries, "What does Osman use to get around?", "What is the color of Adela's eyes?")
    prompts = [chat_prompt([("user", q)]) for q in asked]
    rows = take(state, [0] * len(asked))
    routed, _ = scoped.route(scope, model, prompts, rows)
    assert routed.tolist() == [True, True, True, False, False]
    answer_from = scoped.answering_states(routed, take(edited, [0] * len(asked)), rows)
    texts = [t.strip() for t in rwkv_jax.generate(model, prompts, state=answer_from, max_new_tokens=8).texts]
    assert texts == ["rickshaw"] * 3 + ["station wagon", "violet"]
