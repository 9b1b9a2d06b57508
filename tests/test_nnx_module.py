"""The flax.nnx door: the same logits as the functional API, and one nnx.Optimizer step trains it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rwkv_jax import State, forward
from rwkv_jax.nnx_module import RWKV7


@pytest.fixture(scope="module")
def tokens():
    return jnp.asarray(np.random.default_rng(0).integers(1, 512, 24), jnp.int32)


@pytest.mark.parametrize("wkv", ["scan", "chunked"])
def test_module_gives_the_functional_logits_and_state(tiny, tokens, wkv):
    cfg, params = tiny
    _, start = forward(params, cfg, tokens[:8])
    module = RWKV7(cfg, params, wkv=wkv)
    logits, state = module(tokens, start)
    want_logits, want_state = forward(params, cfg, tokens, start, wkv=wkv)
    assert np.array_equal(np.asarray(logits), np.asarray(want_logits))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(want_state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert isinstance(state, State)


def test_weights_are_params_in_the_functional_layout(tiny):
    cfg, params = tiny
    module = RWKV7(cfg, params)
    leaves = jax.tree.leaves(nnx.state(module, nnx.Param))
    assert len(leaves) == len(jax.tree.leaves(params))
    assert jax.tree.structure(module.weights()) == jax.tree.structure(params)


def test_one_optimizer_step_fine_tunes_the_module(tiny, tokens):
    cfg, params = tiny
    module = RWKV7(cfg, params)
    optimizer = nnx.Optimizer(module, optax.adam(1e-2), wrt=nnx.Param)

    def loss(m: RWKV7) -> jax.Array:
        logits, _ = m(tokens[:-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[1:]).mean()

    before, grads = nnx.value_and_grad(loss)(module)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts and floats
        optimizer.update(module, grads)
    after = loss(module)
    assert float(after) < float(before) - 0.05
    moved = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(module.weights()), jax.tree.leaves(params), strict=True)]
    assert all(moved)  # every weight got a gradient and an update
    assert float(loss(RWKV7(cfg, params))) == pytest.approx(float(before))  # the input params are untouched
