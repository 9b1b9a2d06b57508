"""Sparse deltas: exactly the requested share of each head, the largest entries, whole heads by
norm, the overlap of two edits' supports, and the `sparse` method built on `delta`."""

import math

import jax
import numpy as np
import pytest

import editing
from editing import CaseEdit, get_method
from rwkv_jax import Config, State

CFG = Config.default(2, 128, 512)  # H = 2 heads of N = 64
CASES = [CaseEdit(entity=n, property="vehicle", value_old="hatchback", value_new=v,
                  p_old=f"{n}'s vehicle is hatchback.", p_new=f"{n}'s vehicle is {v}.")
         for n, v in (("Rohan", "minivan"), ("Esme", "tractor"))]


def random_delta(seed: int, batch=(3,)) -> State:
    zeros = State.zeros(CFG, batch)
    keys = jax.random.split(jax.random.key(seed), 3)
    return jax.tree.map(lambda x, k: np.asarray(jax.random.normal(k, x.shape)), zeros,
                        State(wkv=keys[0], att_shift=keys[1], ffn_shift=keys[2]))


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_support_keeps_exactly_the_fraction_of_each_head_and_the_largest_entries(fraction):
    d = random_delta(0)
    mask = editing.support(d, fraction)
    N, D = CFG.head_size, CFG.n_embd
    per_head = np.asarray(mask.wkv).reshape(3, CFG.n_layer, CFG.n_head, -1)
    assert (per_head.sum(-1) == math.ceil(fraction * N * N)).all()
    assert (np.asarray(mask.att_shift).sum(-1) == math.ceil(fraction * D)).all()
    size = np.abs(d.wkv).reshape(per_head.shape)
    kept = np.where(per_head, size, np.inf).min(-1)
    dropped = np.where(per_head, -np.inf, size).max(-1)
    assert (kept >= dropped).all()


def test_heads_mode_keeps_whole_heads_with_the_largest_norms():
    d = random_delta(1, batch=())
    wkv = np.asarray(d.wkv).copy()
    wkv[0, 1] *= 10  # layer 0: head 1 dominates; layer 1: head 0
    wkv[1, 0] *= 10
    mask = editing.support(d.replace(wkv=wkv), 0.5, by="heads")
    heads = np.asarray(mask.wkv)
    np.testing.assert_array_equal(heads.all(axis=(-2, -1)), [[False, True], [True, False]])
    assert not (heads.any(axis=(-2, -1)) & ~heads.all(axis=(-2, -1))).any()  # whole heads or nothing
    slices = np.asarray(mask.att_shift).reshape(CFG.n_layer, CFG.n_head, -1)
    assert (slices.all(-1) | ~slices.any(-1)).all() and (slices.all(-1).sum(-1) == 1).all()


def test_sparsify_zeroes_exactly_what_the_support_leaves_out():
    d = random_delta(2)
    mask, out = editing.support(d, 0.2), editing.sparsify(d, 0.2)
    for m, x, y in zip(jax.tree.leaves(mask), jax.tree.leaves(d), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.where(m, x, 0.0))


def test_overlap_of_supports():
    d = random_delta(3, batch=())
    a = editing.support(d, 0.1)
    assert float(editing.overlap(a, a)) == 1.0
    assert float(editing.overlap(a, editing.support(jax.tree.map(lambda x: -x, d), 0.1))) == 1.0
    # the complement: an edit that only writes where `a` does not
    rest = jax.tree.map(lambda x, m: np.where(m, 0.0, x + 100.0 * np.sign(x)), d, a)
    assert float(editing.overlap(a, editing.support(rest, 0.1))) == 0.0
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        editing.support(d, 0.0)
    with pytest.raises(ValueError, match="by must be one of"):
        editing.support(d, 0.1, by="layers")



def test_the_sparse_method_is_the_delta_sparsified_and_batches_like_a_loop(model, recipients):
    states = recipients
    method = get_method("sparse", fraction=0.05, layers="upper_half")
    out = method.apply_many(states, model, CASES)
    full = get_method("delta").deltas(model, CASES)
    want = editing.apply(states, editing.sparsify(full, 0.05), select=method.select)
    for got, exp in zip(jax.tree.leaves(out), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)
    for i, case in enumerate(CASES):
        one = method.apply(jax.tree.map(lambda x, i=i: x[i], states), model, case)
        np.testing.assert_allclose(out.wkv[i], one.wkv, rtol=1e-4, atol=2e-5)
    np.testing.assert_array_equal(out.wkv[:, 0], states.wkv[:, 0])  # lower layer untouched
    dense = get_method("sparse", fraction=1.0).apply_many(states, model, CASES)
    np.testing.assert_allclose(dense.wkv, get_method("delta").apply_many(states, model, CASES).wkv, rtol=1e-6)
    assert method.label == "sparse(layers=upper_half, fraction=0.05)"
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        get_method("sparse", fraction=1.5)
    with pytest.raises(ValueError, match="by must be one of"):
        get_method("sparse", by="rows")
