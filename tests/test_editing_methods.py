"""Edit methods by name: registry, options, and what each method does to a state."""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editing import (
    CaseEdit,
    EditMethod,
    calibrate,
    cosine,
    get_method,
    method_names,
    norms,
    register,
)
from editing import methods as methods_module
from rwkv_jax.model import forward
from rwkv_jax.state import COMPONENTS

CASE = CaseEdit(
    entity="Rohan", property="vehicle", value_old="hatchback", value_new="minivan",
    p_old="Rohan's vehicle is hatchback.", p_new="Rohan's vehicle is minivan.",
)



def parts(model):
    return model.params, model.cfg, model.tokenizer


def item(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def live(recipients):
    return item(recipients, 0)


def assert_identical(a, b):
    for c in COMPONENTS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)


def test_every_required_method_is_registered():
    assert {"none", "delta", "null", "random", "in_context"} <= set(method_names())


def test_unknown_names_and_options_are_rejected_with_what_exists():
    with pytest.raises(ValueError, match=r"unknown edit method 'rome'.*'delta'"):
        get_method("rome")
    with pytest.raises(ValueError, match=r"has no options \['strength'\].*'alpha'"):
        get_method("delta", strength=2)
    with pytest.raises(ValueError, match="template must be one of"):
        get_method("delta", template="markdown")
    with pytest.raises(ValueError, match="unknown state components"):
        get_method("delta", components="kv")
    with pytest.raises(ValueError, match="unknown layer span"):
        get_method("null", layers="middle")


def test_options_are_normalised_hashable_and_labelled():
    m = get_method("delta", components="wkv", layers=range(2, 4), alpha=2)
    assert m.options == {"template": "chat", "components": ("wkv",), "layers": (2, 3),
                         "alpha": 2.0, "rank": None, "start": "zeros"}
    assert m.label == "delta(components=wkv, layers=(2, 3), alpha=2.0)"
    assert get_method("delta").label == "delta"
    assert m == get_method("delta", components=("wkv",), layers=[2, 3], alpha=2.0)
    assert len({m, get_method("delta", components="wkv", layers=(2, 3), alpha=2.0)}) == 1
    assert get_method("random", seed=4, layers="upper_half").label == (
        "random(layers=upper_half, seed=4)")


def test_a_new_method_plugs_in_by_registering(model, live, monkeypatch):
    monkeypatch.setattr(methods_module, "_REGISTRY", dict(methods_module._REGISTRY))

    @register
    @dataclasses.dataclass(frozen=True)
    class Zero(EditMethod):
        name: ClassVar[str] = "zero"
        keep_shift: bool = False

        def apply(self, state, model, case):
            return jax.tree.map(jnp.zeros_like, state)

    assert "zero" in method_names()
    out = get_method("zero", keep_shift=True).apply(live, model, CASE)
    assert not np.asarray(out.wkv).any()

    @dataclasses.dataclass(frozen=True)
    class Impostor(Zero):
        name: ClassVar[str] = "delta"

    with pytest.raises(ValueError, match="'delta' is already registered"):
        register(Impostor)


def test_none_returns_the_state_unchanged(model, live):
    assert_identical(get_method("none").apply(live, model, CASE), live)


def test_delta_adds_the_calibrated_delta_only_where_selected(model, live):
    out = get_method("delta", components="wkv", layers="upper_half").apply(live, model, CASE)
    d = calibrate(*parts(model), CASE.p_old, CASE.p_new)
    np.testing.assert_array_equal(out.wkv[0], live.wkv[0])
    np.testing.assert_array_equal(out.att_shift, live.att_shift)
    np.testing.assert_array_equal(out.ffn_shift, live.ffn_shift)
    np.testing.assert_allclose(out.wkv[1], live.wkv[1] + d.wkv[1], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out.wkv[1], live.wkv[1])


def test_bare_and_chat_calibration_give_different_edits(model, live):
    chat = get_method("delta").apply(live, model, CASE)
    bare = get_method("delta", template="bare").apply(live, model, CASE)
    assert not np.allclose(chat.wkv, bare.wkv)


def test_delta_method_applies_to_a_batch_of_states_like_a_loop(model, recipients):
    method = get_method("delta", alpha=0.5)
    out = method.apply(recipients, model, CASE)
    for i in range(2):
        assert_identical(item(out, i), method.apply(item(recipients, i), model, CASE))


def test_null_edit_calibrates_on_two_wordings_of_the_old_value(model, live):
    d_null = get_method("null").delta(model, CASE)
    want = calibrate(*parts(model), CASE.p_old, "The vehicle of Rohan is hatchback.")
    for c in COMPONENTS:
        np.testing.assert_array_equal(getattr(d_null, c), getattr(want, c))
    assert float(norms(d_null).total) > 0
    custom = dataclasses.replace(CASE, p_same="Rohan still has the hatchback.")
    assert not np.allclose(get_method("null").delta(model, custom).wkv, d_null.wkv)
    same = dataclasses.replace(CASE, p_same=CASE.p_old)
    with pytest.raises(ValueError, match="worded differently"):
        get_method("null").apply(live, model, same)


def test_random_edit_matches_the_real_norm_in_every_head_and_layer(model):
    real = get_method("delta").delta(model, CASE)
    rand = get_method("random", seed=3).delta(model, CASE)
    want, got = norms(real), norms(rand)
    for grain in ("wkv_heads", "wkv", "att_shift", "ffn_shift", "layers", "total"):
        np.testing.assert_allclose(getattr(got, grain), getattr(want, grain), rtol=1e-5)
    # a random direction in 64 x 64 dimensions is nearly orthogonal to the real one
    assert np.abs(np.asarray(cosine(real, rand).wkv_heads)).max() < 0.1


def test_random_edit_is_reproducible_per_seed_and_differs_across_seeds_and_cases(model):
    a = get_method("random", seed=1).delta(model, CASE)
    assert_identical(a, get_method("random", seed=1).delta(model, CASE))
    assert not np.allclose(a.wkv, get_method("random", seed=2).delta(model, CASE).wkv)
    other = dataclasses.replace(CASE, p_new="Rohan's vehicle is pickup.")
    assert not np.allclose(a.wkv, get_method("random", seed=1).delta(model, other).wkv)


def test_in_context_correction_form_is_a_correction_turn_and_an_acknowledgement():
    assert get_method("in_context", form="correction").text(CASE) == (
        "User: Correction: The vehicle of Rohan is now minivan.\n\nAssistant: Understood.\n\n")
    custom = dataclasses.replace(CASE, correction="Rohan drives a minivan.")
    assert get_method("in_context", form="correction", prefix="", ack="OK.").text(custom) == (
        "User: Rohan drives a minivan.\n\nAssistant: OK.\n\n")


# A short correction keeps the reads in an already compiled 64-token bucket.
SHORT = dataclasses.replace(CASE, correction="Rohan drives a minivan.")


def test_in_context_edit_reads_the_turn_through_the_forward_pass(model, live):
    method = get_method("in_context", ack="OK.")
    out = method.apply(live, model, SHORT)
    tokens = jnp.array(model.tokenizer.encode(method.text(SHORT)), jnp.int32)
    want = forward(model.params, model.cfg, tokens, live)[1]
    for c in COMPONENTS:
        np.testing.assert_allclose(getattr(out, c), getattr(want, c), rtol=1e-4, atol=1e-5)


def test_in_context_edit_keeps_batch_axes_like_a_loop(model, recipients):
    method = get_method("in_context", ack="OK.")
    batch = jax.tree.map(lambda x: x[None], recipients)  # [1, 2]
    out = method.apply(batch, model, SHORT)
    assert out.batch_shape == (1, 2)
    for i in range(2):
        one = method.apply(item(recipients, i), model, SHORT)
        # fp32 sums differ a little with the vmapped batch size
        np.testing.assert_allclose(out.wkv[0, i], one.wkv, rtol=1e-5, atol=1e-5)


def test_case_fields_are_checked():
    with pytest.raises(TypeError, match="CaseEdit.value_new must be a str"):
        dataclasses.replace(CASE, value_new=3)
    with pytest.raises(ValueError, match="CaseEdit.p_new must not be empty"):
        dataclasses.replace(CASE, p_new="")
    with pytest.raises(TypeError, match="case must be an editing.CaseEdit"):
        get_method("none").apply(None, None, {"p_old": "a"})


def test_register_checks_what_a_method_reads():
    @dataclasses.dataclass(frozen=True)
    class Peek(EditMethod):
        name: ClassVar[str] = "peek"
        reads: ClassVar[str] = "the future"

        def apply(self, state, model, case):
            return state

    with pytest.raises(ValueError, match="Peek.reads must be one of"):
        register(Peek)
    assert "peek" not in method_names()


OTHER = CaseEdit(
    entity="Esme", property="vehicle", value_old="hatchback", value_new="tractor",
    p_old="Esme's vehicle is hatchback.", p_new="Esme's vehicle is tractor.", correction="Esme drives a tractor.",
)


@dataclasses.dataclass(frozen=True)
class Scale(EditMethod):
    """Has only `apply`, so `apply_many` is the base class's loop."""

    name: ClassVar[str] = "scale"

    def apply(self, state, model, case):
        return jax.tree.map(lambda x: x * len(case.entity), state)


@pytest.mark.parametrize("name", ["none", "delta", "null", "random", "in_context", "scale"])
def test_apply_many_edits_each_state_with_its_own_case(model, recipients, name):
    method = Scale() if name == "scale" else get_method(name)
    out = method.apply_many(recipients, model, [SHORT, OTHER])
    assert out.batch_shape == (2,)
    for i, case in enumerate([SHORT, OTHER]):
        one = method.apply(item(recipients, i), model, case)
        for c in COMPONENTS:
            np.testing.assert_allclose(getattr(out, c)[i], getattr(one, c), rtol=1e-5, atol=1e-5)
    if name != "none":
        assert not np.allclose(out.wkv[0], method.apply(item(recipients, 0), model, OTHER).wkv)


def test_apply_many_needs_one_state_per_case(model, recipients, live):
    with pytest.raises(ValueError, match="does not match 3 cases"):
        get_method("delta").apply_many(recipients, model, [CASE] * 3)
    with pytest.raises(ValueError, match="non-empty sequence"):
        get_method("delta").apply_many(recipients, model, CASE)
    with pytest.raises(TypeError, match="case must be an editing.CaseEdit"):
        get_method("in_context").apply_many(recipients, model, [CASE, "Esme"])
