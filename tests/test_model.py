"""Properties of the forward pass that must hold whatever the weights."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed_params

from rwkv_jax import Config, State, abstract_params, forward, forward_trace, step
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.state import join_state, split_state
from rwkv_jax.wkv import wkv_chunked, wkv_scan

TOL = dict(atol=2e-5, rtol=2e-5)


def tokens(n, vocab=512, seed=0):
    return jax.random.randint(jax.random.key(seed), (n,), 0, vocab)


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="multiple of head_size"):
        Config.default(2, 100, 512)
    with pytest.raises(ValueError, match="positive int"):
        dataclasses.replace(Config.default(2, 128, 512), n_layer=0)
    cfg = Config.default(2, 128, 512)
    assert Config.from_json(cfg.to_json()) == cfg
    assert hash(cfg) == hash(Config.from_json(cfg.to_json()))


def test_config_is_inferred_from_params(tiny):
    cfg, params = tiny
    assert Config.from_params(params) == cfg
    with pytest.raises(ValueError, match="cannot infer"):
        Config.from_params({"emb": params["emb"]})


def test_repeated_step_equals_forward(tiny):
    cfg, params = tiny
    toks = tokens(12)
    full, final = forward(params, cfg, toks, wkv="scan")
    for advance, start, end in ((functools.partial(step, params), State.zeros(cfg), lambda s: s),
                                (functools.partial(decode_step, decode_params(params, cfg)),
                                 split_state(State.zeros(cfg)), join_state)):
        state, outs = start, []
        for t in toks:
            logits, state = advance(cfg, t, state)
            outs.append(logits)
        np.testing.assert_allclose(jnp.stack(outs), full, **TOL)
        chex.assert_trees_all_close(end(state), final, **TOL)


def test_decode_layout_steps_like_the_stacked_one(tiny):
    """`decode_params` and a `split_state` carry, as the decode loop runs them, give `step`'s
    logits and states; the split state joins back into the stacked one."""
    cfg, params = tiny
    layout = decode_params(params, cfg)
    layout.check(cfg)
    assert len(layout.blocks) == cfg.n_layer and layout.head_vd.shape == (cfg.vocab_size, cfg.n_embd)
    state, split = State.zeros(cfg), split_state(State.zeros(cfg))
    for t in tokens(6):
        want, state = step(params, cfg, t, state)
        got, split = decode_step(layout, cfg, t, split)
        np.testing.assert_allclose(got, want, **TOL)
    assert len(split.wkv) == cfg.n_layer and split.wkv[0].shape == (cfg.n_head, cfg.head_size, cfg.head_size)
    chex.assert_trees_all_close(join_state(split), state, **TOL)
    batched = jax.tree.map(lambda x: jnp.stack([x, 2 * x, 3 * x]), state)  # [3, L, ...]
    assert split_state(batched).att_shift[1].shape == (3, cfg.n_embd)
    chex.assert_trees_all_equal(join_state(split_state(batched)), batched)


@pytest.mark.parametrize("impl", ["scan", "chunked"])
def test_split_sequence_carries_state(tiny, impl):
    cfg, params = tiny
    toks = tokens(70)
    whole, s_whole = forward(params, cfg, toks, wkv=impl)
    first, s_a = forward(params, cfg, toks[:23], wkv=impl)
    second, s_b = forward(params, cfg, toks[23:], s_a, wkv=impl)
    np.testing.assert_allclose(jnp.concatenate([first, second]), whole, **TOL)
    chex.assert_trees_all_close(s_b, s_whole, atol=5e-5, rtol=2e-5)


@pytest.mark.parametrize("chunk_size,n", [(16, 50), (24, 50), (32, 64), (64, 100), (32, 7)])
def test_chunked_matches_scan_outputs_and_states(tiny, chunk_size, n):
    cfg, params = tiny
    toks = tokens(n, seed=n)
    a, sa = forward(params, cfg, toks, wkv="scan")
    b, sb = forward(params, cfg, toks, wkv="chunked", chunk_size=chunk_size)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5)
    chex.assert_trees_all_close(sa, sb, atol=1e-4, rtol=1e-5)


def test_chunked_matches_scan_gradients(tiny):
    cfg, params = tiny
    toks = tokens(40)

    def loss(p, impl):
        logits, state = forward(p, cfg, toks[:-1], wkv=impl)
        nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), toks[1:, None], 1).mean()
        return nll + 1e-3 * jnp.square(state.wkv).mean()

    ga = jax.grad(loss)(params, "scan")
    gb = jax.grad(loss)(params, "chunked")
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
        scale = float(jnp.abs(x).max()) + 1e-8
        assert float(jnp.abs(x - y).max()) <= 1e-4 * scale, jax.tree_util.keystr(path)


def test_wkv_kernels_agree_with_nonzero_initial_state(key):
    T, H, N = 45, 3, 16
    ks = jax.random.split(key, 7)
    r, k, v = (jax.random.normal(ks[i], (T, H, N)) for i in range(3))
    kk = jax.random.normal(ks[3], (T, H, N))
    kk = kk / jnp.linalg.norm(kk, axis=-1, keepdims=True)
    a = jax.nn.sigmoid(jax.random.normal(ks[4], (T, H, N)))
    log_w = -0.606531 * jax.nn.sigmoid(3 * jax.random.normal(ks[5], (T, H, N)))
    s0 = jax.random.normal(ks[6], (H, N, N))
    y1, s1 = wkv_scan(r, log_w, k, v, -kk, kk * a, s0)
    y2, s2 = wkv_chunked(r, log_w, k, v, -kk, kk * a, s0, chunk_size=16)
    np.testing.assert_allclose(y1, y2, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(s1, s2, atol=1e-4, rtol=1e-5)


def test_vmap_equals_loop(tiny):
    cfg, params = tiny
    batch = jnp.stack([tokens(20, seed=s) for s in range(3)])
    logits, states = jax.vmap(lambda t: forward(params, cfg, t))(batch)
    for i in range(3):
        one, state = forward(params, cfg, batch[i])
        np.testing.assert_allclose(logits[i], one, **TOL)
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], states), state, **TOL)


@pytest.mark.parametrize("impl", ["scan", "chunked"])
def test_padding_past_length_leaves_state_untouched(tiny, impl):
    cfg, params = tiny
    toks = tokens(37)
    exact_logits, exact = forward(params, cfg, toks, wkv=impl, logits="last")
    padded = jnp.concatenate([toks, jnp.full(27, 5, toks.dtype)])
    logits, state = forward(params, cfg, padded, wkv=impl, logits="last", length=37)
    np.testing.assert_allclose(logits, exact_logits, **TOL)
    chex.assert_trees_all_close(state, exact, **TOL)
    _, untouched = forward(params, cfg, padded, exact, wkv=impl, length=0)
    chex.assert_trees_all_close(untouched, exact, atol=0, rtol=0)


def test_last_logits_are_the_last_row_of_all(tiny):
    cfg, params = tiny
    toks = tokens(9)
    full, s1 = forward(params, cfg, toks)
    last, s2 = forward(params, cfg, toks, logits="last")
    np.testing.assert_allclose(last, full[-1], **TOL)
    chex.assert_trees_all_close(s1, s2, **TOL)


def test_bf16_params_run_and_stay_close_to_fp32(tiny):
    cfg, params = tiny
    toks = tokens(40)
    ref, ref_state = forward(params, cfg, toks)
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    logits, state = forward(half, cfg, toks)
    assert logits.dtype == jnp.float32 and state.wkv.dtype == jnp.float32
    assert jnp.all(jnp.isfinite(logits))
    rel = jnp.abs(logits - ref).max() / jnp.abs(ref).max()
    assert rel < 0.05, rel
    assert jnp.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.995


def test_trace_matches_forward_and_is_consistent(tiny):
    cfg, params = tiny
    toks = tokens(15)
    logits, final = forward(params, cfg, toks, wkv="scan")
    t_logits, t_final, trace = forward_trace(params, cfg, toks)
    np.testing.assert_allclose(t_logits, logits, **TOL)
    chex.assert_trees_all_close(t_final, final, **TOL)
    assert trace.hidden.shape == (cfg.n_layer + 1, 15, cfg.n_embd)
    assert trace.states.wkv.shape == (15, cfg.n_layer, cfg.n_head, cfg.head_size, cfg.head_size)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[-1], trace.states), final, **TOL)
    _, after5 = forward(params, cfg, toks[:5], wkv="scan")
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[4], trace.states), after5, **TOL)


def test_state_shape_helpers(tiny):
    cfg, _ = tiny
    s = State.zeros(cfg, (4, 2))
    assert s.batch_shape == (4, 2) and s.matches(cfg)
    assert [f for f in ("wkv", "att_shift", "ffn_shift")] == list(State.__dataclass_fields__)
    other = Config.default(3, 128, 512)
    assert not s.matches(other)
    with pytest.raises(ValueError, match="do not belong"):
        s.check(other)


def test_state_layout_is_read_from_the_state(tiny):
    cfg, _ = tiny
    s = State.zeros(cfg, (4,))
    assert State.components() == ("wkv", "att_shift", "ffn_shift")
    for c in State.components():
        leaf = getattr(s, c)
        assert leaf.shape[State.layer_axis(c)] == cfg.n_layer
        assert leaf.ndim == 1 + 1 + State.core_rank(c)  # batch, layer, core
    assert State.unit_axes("wkv") == (-2, -1) and State.unit_axes("att_shift") == (-1,)
    per_head = jnp.ones((4, cfg.n_layer, cfg.n_head))
    assert (State.per_unit("wkv", per_head) * s.wkv).shape == s.wkv.shape


def test_full_size_forward_shapes_without_allocating():
    cfg = Config.default(32, 4096, 65536)  # the 7.2B G1 shape, F = 4D
    params = abstract_params(cfg, jnp.bfloat16)
    toks = jax.ShapeDtypeStruct((8,), jnp.int32)
    logits, state = jax.eval_shape(lambda p, t: forward(p, cfg, t), params, toks)
    assert logits.shape == (8, 65536) and logits.dtype == jnp.float32
    assert state.wkv.shape == (32, 64, 64, 64)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    assert 7.0e9 < n_params < 7.6e9


def test_gradients_are_finite_for_training(key):
    cfg = Config.default(2, 128, 300)
    params = perturbed_params(cfg, seed=3)
    toks = jax.random.randint(key, (65,), 0, 300)

    def loss(p):
        logits, _ = forward(p, cfg, toks[:-1])
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), toks[1:, None], 1).mean()

    grads = jax.grad(loss)(params)
    chex.assert_tree_all_finite(grads)
    assert float(optax_global_norm(grads)) > 0


def optax_global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
