"""`forward` (all or last logits), `step` and `forward_trace` given another model's state, a batch of states,
or something that is not a state: a `ValueError` or `TypeError` naming the shapes, raised while
tracing, instead of a shape error from inside `lax.scan`."""

import jax
import jax.numpy as jnp
import pytest
from conftest import perturbed_params

from rwkv_jax import Config, State, forward, forward_trace, step
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.state import split_state

CFG = Config.default(2, 128, 300)
OTHER = {
    "more layers": State.zeros(Config.default(3, 128, 300)),
    "wider": State.zeros(Config.default(2, 192, 300)),
}


@pytest.fixture(scope="module")
def params():
    return perturbed_params(CFG)


CALLS = {
    "forward": lambda p, s: forward(p, CFG, jnp.array([1, 2, 3]), s),
    "forward last": lambda p, s: forward(p, CFG, jnp.array([1, 2, 3]), s, logits="last"),
    "step": lambda p, s: step(p, CFG, jnp.array(1), s),
    "forward_trace": lambda p, s: forward_trace(p, CFG, jnp.array([1, 2, 3]), s),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("other", OTHER)
def test_another_models_state_is_refused_naming_both_shapes(params, call, other):
    with pytest.raises(ValueError, match=r"state shapes wkv=\(\d, \d, 64, 64\).* do not belong to a model with "
                                         r"L=2, H=2, N=64, D=128"):
        CALLS[call](params, OTHER[other])


@pytest.mark.parametrize("call", CALLS)
def test_a_batch_of_states_is_refused_with_the_way_to_batch(params, call):
    with pytest.raises(ValueError, match=r"state has batch axes \(4,\); .*jax\.vmap them"):
        CALLS[call](params, State.zeros(CFG, (4,)))
    jax.vmap(lambda s: CALLS[call](params, s))(State.zeros(CFG, (4,)))  # the way that works


def test_a_split_state_of_another_model_is_refused_by_the_decode_step(params):
    layout = decode_params(params, CFG)
    decode_step(layout, CFG, jnp.array(1), split_state(State.zeros(CFG)))
    with pytest.raises(ValueError, match="a split state must hold 2 per-layer arrays"):
        decode_step(layout, CFG, jnp.array(1), split_state(OTHER["more layers"]))
    with pytest.raises(ValueError, match="do not belong to a model"):
        decode_step(layout, CFG, jnp.array(1), split_state(State.zeros(Config.default(2, 192, 300))))
    with pytest.raises(ValueError, match=r"state has batch axes \(4,\)"):
        decode_step(layout, CFG, jnp.array(1), split_state(State.zeros(CFG, (4,))))
    with pytest.raises(TypeError, match="SplitState"):
        decode_step(layout, CFG, jnp.array(1), State.zeros(CFG))


def test_decode_params_of_another_model_are_refused_naming_the_leaves(params):
    decode_params(params, CFG).check(CFG)
    with pytest.raises(ValueError, match=r"decode params do not match the config:\n.*head_vd"):
        decode_params(params, CFG).replace(head_vd=jnp.zeros((3, 128))).check(CFG)
    with pytest.raises(ValueError, match="params do not match the config"):
        decode_params(params, Config.default(3, 128, 300))


def test_something_else_as_the_state_is_refused(params):
    with pytest.raises(TypeError, match="state must be an rwkv_jax.State, got dict"):
        forward(params, CFG, jnp.array([1]), {"wkv": jnp.zeros(3)})
