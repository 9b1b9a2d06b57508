"""Read-addressed edits (`addressed`, `erase`), their read keys, `locate`, and the delta's rank / live options."""

import dataclasses

import chex
import jax
import numpy as np
import pytest

import editing
import rime
import rwkv_jax
from editing import CaseEdit, get_method, keys, locate, writes
from editing.calibration import calibrate_batch, read
from rime.eval import protocol
from rwkv_jax.chat import chat_prompt

PEOPLE = ("Aarav", "Abena", "Esme", "Ines", "Rohan", "Silas", "Tomas")
VEHICLES = ("hatchback", "minivan", "tractor", "pickup truck")
CASE = CaseEdit(entity="Rohan", property="vehicle", value_old="hatchback", value_new="minivan",
                p_old="Rohan drives a hatchback.", p_new="Rohan drives a minivan.", people=PEOPLE, values=VEHICLES)
OTHER = CaseEdit(entity="Esme", property="vehicle", value_old="hatchback", value_new="tractor",
                 p_old="Esme drives a hatchback.", p_new="Esme drives a tractor.", people=PEOPLE, values=VEHICLES)



def item(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def own_keys(model, states, cases, **options):
    return keys.read_keys(model.params, model.cfg, model.tokenizer,
                          [keys.question(c.entity, c.property) for c in cases], [c.value_old for c in cases],
                          states, **options)


def test_own_question_names_the_entity_and_property_only():
    assert keys.question("Rohan", "favourite drink") == "User: What is Rohan's favourite drink?\n\nAssistant:"


def test_other_people_come_from_the_name_list_without_the_entity():
    names = keys.other_people("Aarav", PEOPLE, 5)
    assert len(set(names)) == 5 and "Aarav" not in names
    assert names == keys.other_people("Aarav", PEOPLE, 5) != keys.other_people("Abena", PEOPLE, 5)
    with pytest.raises(ValueError, match=r"can draw 0..6 other people \(CaseEdit.people\)"):
        keys.other_people("Aarav", PEOPLE, 7)


@pytest.mark.parametrize("kind", ["gradient", "receptance"])
def test_read_keys_are_orthonormal_per_head(model, recipients, kind):
    R = own_keys(model, recipients, [CASE, OTHER], kind=kind, k=3)
    L, H, N = model.cfg.n_layer, model.cfg.n_head, model.cfg.head_size
    assert R.shape == (2, L, H, N, 3)
    np.testing.assert_allclose(np.swapaxes(R, -1, -2) @ R, np.broadcast_to(np.eye(3), (2, L, H, 3, 3)),
                               atol=1e-4)


def test_gradient_keys_span_the_gradient_of_the_answer(model, recipients):
    # k = head size keeps every direction; a small k keeps the top of the gradient's key side
    live = item(recipients, 0)
    tokens = np.array(model.tokenizer.encode(keys.question("Rohan", "vehicle")), np.int32)
    target = model.tokenizer.encode(" hatchback")[0]

    def log_p(wkv):
        logits, _ = rwkv_jax.model.forward(model.params, model.cfg, tokens, live.replace(wkv=wkv),
                                           logits="last")
        return jax.nn.log_softmax(logits)[target]

    g = np.asarray(jax.grad(log_p)(live.wkv))  # [L, H, N, N]
    R = np.asarray(own_keys(model, recipients, [CASE, OTHER], k=2)[0])
    projected = g @ R @ np.swapaxes(R, -1, -2)
    top2 = np.asarray(writes.truncate(g, 2))
    np.testing.assert_allclose(np.linalg.norm(projected, axis=(-2, -1)),
                               np.linalg.norm(top2, axis=(-2, -1)), rtol=1e-3)


@pytest.mark.parametrize("start", ["zeros", "live"])
def test_addressed_reads_the_calibrated_values_along_its_keys(model, recipients, start):
    method = get_method("addressed", k=2, layers="upper_half", start=start)
    out = method.apply_many(recipients, model, [CASE, OTHER])
    R = own_keys(model, recipients, [CASE, OTHER], k=2)
    delta = calibrate_batch(model.params, model.cfg, model.tokenizer, [(c.p_old, c.p_new) for c in (CASE, OTHER)],
                            init_state=recipients if start == "live" else None)
    want = (recipients.wkv + delta.wkv) @ R
    np.testing.assert_allclose((out.wkv @ R)[:, 1], want[:, 1], rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(out.wkv[:, 0], recipients.wkv[:, 0])  # layer 0 is not selected
    np.testing.assert_array_equal(out.att_shift, recipients.att_shift)
    assert not np.allclose(out.wkv[:, 1], recipients.wkv[:, 1])


def test_protection_holds_other_peoples_keys(model, recipients):
    method = get_method("addressed", k=2, protect=3, lam=1e-3)
    R, kept = method.addresses(recipients, model, [CASE, OTHER])
    assert kept.shape == R.shape[:-1] + (6,)
    out = method.apply_many(recipients, model, [CASE, OTHER])
    dS = out.wkv - recipients.wkv
    scale = np.abs(dS @ R).max()
    assert np.abs(dS @ kept).max() < 1e-4 * scale
    # without protection the same write moves them
    free = get_method("addressed", k=2, lam=1e-3).apply_many(recipients, model, [CASE, OTHER])
    assert np.abs((free.wkv - recipients.wkv) @ kept).max() > 1e-2 * scale


def test_erase_leaves_nothing_to_read_along_the_old_values_keys(model, recipients):
    out = get_method("erase", k=3).apply_many(recipients, model, [CASE, OTHER])
    R = own_keys(model, recipients, [CASE, OTHER], k=3)
    before = np.abs(recipients.wkv @ R).max()
    assert np.abs(out.wkv @ R).max() < 1e-4 * before
    assert get_method("erase").erases and not get_method("addressed").erases


@pytest.mark.parametrize("spec", ["addressed:keys=receptance:k=2", "addressed:keys=receptance:protect=2:lam=0.1",
                                  "addressed:k=2", "erase:k=2"])
def test_apply_many_equals_a_loop_over_cases(model, recipients, spec):
    method = protocol.parse_method(spec)
    out = method.apply_many(recipients, model, [CASE, OTHER])
    for i, case in enumerate([CASE, OTHER]):
        one = method.apply(item(recipients, i), model, case)
        np.testing.assert_allclose(out.wkv[i], one.wkv, rtol=1e-4, atol=2e-5)  # fp32 reassociation between batch sizes


def test_new_cases_of_the_same_shape_reuse_the_compiled_kernels(model, recipients, monkeypatch):
    chex.clear_trace_counter()
    monkeypatch.setattr(keys, "_keys", jax.jit(chex.assert_max_traces(keys._keys.__wrapped__, 1),
                                               static_argnames=("cfg", "kind", "k")))
    method = get_method("addressed", k=2)
    method.apply_many(recipients, model, [CASE, OTHER])
    method.apply_many(recipients, model, [OTHER, CASE])  # raises if the key kernel retraces


def test_options_are_checked_by_name(model, recipients):
    with pytest.raises(ValueError, match="keys must be one of"):
        get_method("addressed", keys="attention")
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        get_method("erase", k=0)
    with pytest.raises(ValueError, match="protect must be an int >= 0"):
        get_method("addressed", protect=-1)
    with pytest.raises(ValueError, match="lam must be finite"):
        get_method("addressed", lam=float("nan"))
    with pytest.raises(ValueError, match="start must be one of"):
        get_method("addressed", start="middle")
    with pytest.raises(ValueError, match="k must be in 1..64"):
        get_method("addressed", k=65).apply(item(recipients, 0), model, CASE)
    with pytest.raises(ValueError, match="edits one state with apply"):
        get_method("addressed").apply(recipients, model, CASE)
    assert get_method("addressed", k=2, layers="upper_half").label == "addressed(k=2, layers=upper_half)"


def test_delta_rank_keeps_the_top_singular_pairs_of_each_head(model, recipients):
    live = item(recipients, 0)
    full = get_method("delta").delta(model, CASE)
    one = get_method("delta", rank=1).delta(model, CASE)
    np.testing.assert_allclose(one.wkv, writes.truncate(full.wkv, 1), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(one.att_shift, full.att_shift)
    assert get_method("delta", rank=1).apply(live, model, CASE).wkv.shape == live.wkv.shape
    with pytest.raises(ValueError, match="rank must be None or an int >= 1"):
        get_method("delta", rank=0)


def test_delta_from_the_live_state_calibrates_in_the_live_context(model, recipients):
    method = get_method("delta", start="live")
    out = method.apply_many(recipients, model, [CASE, OTHER])
    want = calibrate_batch(model.params, model.cfg, model.tokenizer,
                           [(c.p_old, c.p_new) for c in (CASE, OTHER)], init_state=recipients)
    np.testing.assert_allclose(out.wkv, recipients.wkv + want.wkv, rtol=1e-5, atol=1e-5)
    zeros = get_method("delta").apply_many(recipients, model, [CASE, OTHER])
    assert not np.allclose(out.wkv, zeros.wkv, atol=1e-4)
    np.testing.assert_allclose(method.apply(item(recipients, 1), model, OTHER).wkv, out.wkv[1], atol=1e-5)
    with pytest.raises(ValueError, match="start must be one of"):
        get_method("delta", start="middle")
    with pytest.raises(ValueError, match="calibrates from one state"):
        method.apply(recipients, model, CASE)


def test_in_context_default_is_the_case_sentence_and_the_correction_stays_an_option():
    assert get_method("in_context").text(CASE) == "User: Rohan drives a minivan.\n\nAssistant: Noted.\n\n"
    assert get_method("in_context", form="correction").text(CASE) == (
        "User: Correction: The vehicle of Rohan is now minivan.\n\nAssistant: Understood.\n\n")
    with pytest.raises(ValueError, match="form must be one of"):
        get_method("in_context", form="whisper")


@pytest.fixture(scope="module")
def bundled():
    return rwkv_jax.load("rime-tiny")


def test_addressed_flips_the_case_and_leaves_another_person_alone(bundled):
    # dev-001: Adela's pickup truck -> rickshaw; Osman keeps his station wagon
    case = next(c for c in rime.load("dev") if c.id == "dev-001")
    (edit,), = protocol.case_edits(case)
    _, state = read(bundled.params, bundled.cfg, bundled.tokenizer, [protocol.recipient_text(case)])
    edited = get_method("addressed").apply_many(state, bundled, [edit])
    prompts = [chat_prompt([("user", q)]) for q in (case.queries[0], "What does Osman use to get around?")]

    def answers(states):
        both = jax.tree.map(lambda x: np.repeat(x, 2, axis=0), states)
        return [t.strip() for t in rwkv_jax.generate(bundled, prompts, state=both, max_new_tokens=8).texts]

    assert answers(state) == ["pickup truck", "station wagon"]
    assert answers(edited) == ["rickshaw", "station wagon"]
    assert editing.AddressedEdit is type(get_method("addressed"))


TRANSCRIPT = ("User: Silas drives a hatchback. Rohan owns a hatchback and a dog.\n\n"
              "Assistant: Noted.\n\nUser: The weather was fine.\n\nAssistant: Noted.\n\n")
LOCATED = dataclasses.replace(CASE, transcript=TRANSCRIPT)


def test_locate_finds_the_entitys_statement_not_another_persons(model):
    tokens, start, end = locate.span(model.tokenizer, TRANSCRIPT, "Rohan", "hatchback", PEOPLE)
    assert model.tokenizer.decode(tokens[start:end]) == " hatchback"
    assert TRANSCRIPT.encode()[:len(model.tokenizer.decode(tokens[:start]).encode())].endswith(b"owns a")
    with pytest.raises(editing.EntityNotInTranscriptError, match="never mentions 'Esme'"):
        locate.span(model.tokenizer, TRANSCRIPT, "Esme", "hatchback", PEOPLE)
    with pytest.raises(editing.EntityNotInTranscriptError, match="never states 'minivan' for 'Rohan'"):
        locate.span(model.tokenizer, TRANSCRIPT, "Rohan", "minivan", PEOPLE)


def test_locate_writes_the_new_values_difference_decayed_to_the_present(model):
    tokens, start, end = locate.span(model.tokenizer, TRANSCRIPT, "Rohan", "hatchback", PEOPLE)
    p, cfg = model.params, model.cfg
    run = lambda t, s=None: rwkv_jax.model.forward(p, cfg, np.array(t, np.int32), s)[1]
    live, old, before = run(tokens), run(tokens[:end]), run(tokens[:start])
    D = run(model.tokenizer.encode(" minivan"), before).wkv - run(model.tokenizer.encode(" hatchback"), before).wkv
    out = get_method("locate").apply(live, model, LOCATED)
    for layer in range(cfg.n_layer):
        # the rest of the transcript carries a change of one layer's state linearly to the present
        moved = run(tokens[end:], old.replace(wkv=old.wkv.at[layer].add(D[layer])))
        np.testing.assert_allclose(out.wkv[layer] - live.wkv[layer], moved.wkv[layer] - live.wkv[layer],
                                   rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(out.att_shift, live.att_shift)


def test_locate_rewrites_a_stacks_later_steps_at_the_same_statement_so_they_add_up(model):
    # the second step's old value (minivan) is not in the transcript: it rewrites the statement of
    # a bundled vehicle value (hatchback) again, and the two steps equal one to the last value
    live = rwkv_jax.model.forward(model.params, model.cfg, np.array(model.tokenizer.encode(TRANSCRIPT), np.int32))[1]
    second = dataclasses.replace(LOCATED, value_old="minivan", value_new="tractor")
    method = get_method("locate")
    twice = method.apply(method.apply(live, model, LOCATED), model, second)
    once = method.apply(live, model, dataclasses.replace(LOCATED, value_new="tractor"))
    np.testing.assert_allclose(twice.wkv, once.wkv, rtol=1e-4, atol=1e-4)
    assert not np.allclose(twice.wkv, method.apply(live, model, LOCATED).wkv, atol=1e-3)


def test_locate_by_a_name_the_transcript_lacks_keeps_or_raises(model, recipients):
    stranger = dataclasses.replace(OTHER, transcript=TRANSCRIPT)
    out = get_method("locate").apply_many(recipients, model, [LOCATED, stranger])
    np.testing.assert_array_equal(out.wkv[1], recipients.wkv[1])
    assert not np.allclose(out.wkv[0], recipients.wkv[0])
    with pytest.raises(editing.EntityNotInTranscriptError, match="never mentions 'Esme'"):
        get_method("locate", missing="raise").apply_many(recipients, model, [LOCATED, stranger])
    with pytest.raises(ValueError, match="this case has none"):
        get_method("locate").apply_many(recipients, model, [CASE, stranger])
    with pytest.raises(ValueError, match="no CaseEdit.people"):
        get_method("locate").apply_many(recipients, model, [dataclasses.replace(LOCATED, people=()), stranger])
    with pytest.raises(ValueError, match="missing must be one of"):
        get_method("locate", missing="ignore")
    assert get_method("locate").reads == "transcript"


def test_optimized_raises_the_new_values_probability_on_the_selected_layers(model, recipients):
    method = get_method("optimized", steps=5, lr=0.05, others=2, layers="upper_half")
    out = method.apply_many(recipients, model, [CASE, OTHER])
    np.testing.assert_array_equal(out.wkv[:, 0], recipients.wkv[:, 0])
    np.testing.assert_array_equal(out.att_shift, recipients.att_shift)
    prompts = [keys.question(c.entity, c.property) for c in (CASE, OTHER)]
    new = [model.tokenizer.encode(" " + c.value_new)[0] for c in (CASE, OTHER)]
    before = jax.nn.log_softmax(read(model.params, model.cfg, model.tokenizer, prompts, recipients)[0])
    after = jax.nn.log_softmax(read(model.params, model.cfg, model.tokenizer, prompts, out)[0])
    assert all(after[i, t] > before[i, t] + 0.1 for i, t in enumerate(new))
    np.testing.assert_allclose(method.apply(item(recipients, 1), model, OTHER).wkv, out.wkv[1], atol=1e-4)
    with pytest.raises(ValueError, match="steps must be an int in 1..50"):
        get_method("optimized", steps=51)
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        get_method("optimized", lr=0)
