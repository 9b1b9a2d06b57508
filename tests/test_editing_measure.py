"""Norms and cosines per head, layer, component and in total, against plain numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editing import StateMismatchError, cosine, norms
from rwkv_jax.state import State

L, H, N = 3, 2, 8


def rand_state(seed, batch=()):
    rng = np.random.default_rng(seed)  # numpy: no compilation per shape
    normal = lambda *shape: jnp.asarray(rng.standard_normal((*batch, *shape), np.float32))
    return State(wkv=normal(L, H, N, N), att_shift=normal(L, H * N), ffn_shift=normal(L, H * N))


def flat_layer(x, layer):
    """Every number of one layer, all components, as one vector."""
    return np.concatenate([np.asarray(x.wkv[layer]).ravel(), np.asarray(x.att_shift[layer]),
                           np.asarray(x.ffn_shift[layer])])


def test_norms_match_numpy_at_every_grain():
    x = rand_state(0)
    n = norms(x)
    wkv = np.asarray(x.wkv, np.float64)
    np.testing.assert_allclose(n.wkv_heads, np.linalg.norm(wkv.reshape(L, H, -1), axis=-1),
                               rtol=1e-5)
    np.testing.assert_allclose(n.wkv, np.linalg.norm(wkv.reshape(L, -1), axis=-1), rtol=1e-5)
    np.testing.assert_allclose(n.att_shift, np.linalg.norm(x.att_shift, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(n.ffn_shift, np.linalg.norm(x.ffn_shift, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(n.layers, [np.linalg.norm(flat_layer(x, i)) for i in range(L)],
                               rtol=1e-5)
    everything = np.concatenate([flat_layer(x, i) for i in range(L)])
    np.testing.assert_allclose(n.total, np.linalg.norm(everything), rtol=1e-5)


def test_cosine_matches_numpy_per_head_and_per_layer():
    a, b = rand_state(1), rand_state(2)
    c = cosine(a, b)

    def cos(u, v):
        return np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))

    for layer in range(L):
        for head in range(H):
            np.testing.assert_allclose(
                c.wkv_heads[layer, head],
                cos(np.ravel(a.wkv[layer, head]), np.ravel(b.wkv[layer, head])), atol=1e-6)
        np.testing.assert_allclose(c.layers[layer], cos(flat_layer(a, layer), flat_layer(b, layer)),
                                   atol=1e-6)
        np.testing.assert_allclose(c.att_shift[layer], cos(a.att_shift[layer], b.att_shift[layer]),
                                   atol=1e-6)


def test_cosine_is_one_with_itself_minus_one_with_its_negation_nan_for_zeros():
    a = rand_state(3)
    np.testing.assert_allclose(cosine(a, a).wkv_heads, 1.0, rtol=1e-6)
    np.testing.assert_allclose(cosine(a, jax.tree.map(lambda x: -x, a)).total, -1.0, rtol=1e-6)
    zero = jax.tree.map(lambda x: 0 * x, a)
    assert np.isnan(cosine(a, zero).layers).all()


def test_statistics_keep_batch_axes_and_broadcast_like_a_loop():
    batch, one = rand_state(4, (3,)), rand_state(5)
    assert norms(batch).wkv_heads.shape == (3, L, H)
    assert norms(batch).total.shape == (3,)
    c = cosine(batch, one)
    for i in range(3):
        item = cosine(jax.tree.map(lambda x, i=i: x[i], batch), one)
        np.testing.assert_allclose(c.layers[i], item.layers, atol=1e-6)


def test_states_of_different_models_cannot_be_compared():
    other = State(wkv=np.zeros((L, H, N, N), np.float32),
                  att_shift=np.zeros((L + 1, H * N), np.float32),
                  ffn_shift=np.zeros((L + 1, H * N), np.float32))
    with pytest.raises(StateMismatchError, match="is not a State"):
        norms(other)
    with pytest.raises(StateMismatchError, match="batch shapes"):
        cosine(rand_state(6, (2,)), rand_state(7, (3,)))
