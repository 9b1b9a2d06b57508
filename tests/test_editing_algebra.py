"""State algebra laws, slice-exact selections, batching, no retracing and argument errors."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from editing import (
    Edit,
    NonFiniteDeltaError,
    Selection,
    StateMismatchError,
    algebra,
    apply,
    apply_edit,
    delta,
    interpolate,
    revert,
    scale,
    transplant,
    undo,
)
from rwkv_jax.state import COMPONENTS, State

L, H, N = 3, 2, 8
D = H * N
EPS = np.finfo(np.float32).eps


def rand_state(seed, batch=(), *, layers=L, heads=H, size=N, scale_=1.0):
    rng = np.random.default_rng(seed)  # numpy: no compilation per shape
    normal = lambda *shape: jnp.asarray(scale_ * rng.standard_normal((*batch, *shape), np.float32))
    return State(wkv=normal(layers, heads, size, size), att_shift=normal(layers, heads * size),
                 ffn_shift=normal(layers, heads * size))


def leaves(x):
    return {c: np.asarray(getattr(x, c)) for c in COMPONENTS}


def assert_identical(a, b):
    for c in COMPONENTS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)


def selected(sel_layers, sel_components, sel_heads, c, layer, head):
    """Independent statement of what a selection covers."""
    return (layer in sel_layers and c in sel_components
            and (c != "wkv" or sel_heads is None or head in sel_heads))


SELECTIONS = [
    (range(L), COMPONENTS, None),
    ([0], COMPONENTS, None),
    ([1, 2], ("wkv",), None),
    ([2], ("att_shift", "ffn_shift"), None),
    ([0, 2], ("wkv", "ffn_shift"), [1]),
    ([], COMPONENTS, None),
]


def check_slices(out, on_selected, on_other, spec):
    """Every (component, layer[, head]) slice of `out` equals `on_selected` or `on_other`."""
    layers, components, heads = spec
    out, yes, no = leaves(out), leaves(on_selected), leaves(on_other)
    for c in COMPONENTS:
        for layer, head in itertools.product(range(L), range(H)):
            idx = (layer, head) if c == "wkv" else (layer,)
            want = yes if selected(layers, components, heads, c, layer, head) else no
            np.testing.assert_array_equal(out[c][idx], want[c][idx], err_msg=f"{c} {idx}")


@pytest.mark.parametrize("spec", SELECTIONS)
def test_apply_adds_the_delta_on_exactly_the_selected_slices(spec):
    x, d = rand_state(0), rand_state(1)
    out = apply(x, d, select=Selection(*spec))
    added = State(**{c: leaves(x)[c] + leaves(d)[c] for c in COMPONENTS})
    check_slices(out, added, x, spec)


@pytest.mark.parametrize("spec", SELECTIONS)
def test_transplant_copies_exactly_the_selected_slices_from_src(spec):
    dst, src = rand_state(2), rand_state(3)
    check_slices(transplant(dst, src, select=Selection(*spec)), src, dst, spec)


@pytest.mark.parametrize("spec", SELECTIONS)
def test_scale_multiplies_exactly_the_selected_slices(spec):
    x = rand_state(4)
    scaled = State(**{c: np.float32(-2.5) * leaves(x)[c] for c in COMPONENTS})
    check_slices(scale(x, -2.5, select=Selection(*spec)), scaled, x, spec)


def test_transplant_of_everything_yields_src_and_of_nothing_yields_dst():
    dst, src = rand_state(5), rand_state(6)
    assert_identical(transplant(dst, src), src)
    assert_identical(transplant(dst, src, select=Selection(layers=[])), dst)


def test_alpha_zero_is_a_no_op():
    x, d = rand_state(7), rand_state(8)
    assert_identical(apply(x, d, alpha=0.0), x)


def test_alpha_scales_the_added_delta():
    x, d = rand_state(9), rand_state(10)
    out = leaves(apply(x, d, alpha=0.25))
    for c in COMPONENTS:
        np.testing.assert_allclose(out[c], leaves(x)[c] + 0.25 * leaves(d)[c], rtol=1e-6)


def test_delta_then_apply_moves_old_onto_new():
    old, new = rand_state(11), rand_state(12)
    moved = leaves(apply(old, delta(new, old)))
    for c in COMPONENTS:
        np.testing.assert_allclose(moved[c], leaves(new)[c], atol=4 * EPS)


@pytest.mark.parametrize("alpha", [1.0, 0.3, -1.7])
def test_undo_inverts_apply_up_to_one_rounding_per_element(alpha):
    # Mixed magnitudes make (x + d) - d != x for some elements: undo cannot be bit-exact.
    x, d = rand_state(13, scale_=1e-3), rand_state(14, scale_=10.0)
    back = leaves(undo(apply(x, d, alpha=alpha), d, alpha=alpha))
    for c in COMPONENTS:
        x_c, step = leaves(x)[c], np.abs(np.float32(alpha) * leaves(d)[c])
        assert np.all(np.abs(back[c] - x_c) <= EPS * (np.abs(x_c) + step)), c


def test_revert_restores_the_pre_edit_state_bit_for_bit():
    x, d = rand_state(13, scale_=1e-3), rand_state(14, scale_=10.0)
    sel = Selection(layers=[0, 2], components=("wkv", "att_shift"))
    edited, record = apply_edit(x, d, alpha=0.3, select=sel)
    assert_identical(edited, apply(x, d, alpha=0.3, select=sel))
    arithmetic = undo(edited, d, alpha=0.3, select=sel)
    assert not np.array_equal(arithmetic.wkv, x.wkv), "this case must be inexact for undo"
    assert_identical(revert(edited, record), x)


def test_revert_after_a_later_edit_removes_only_its_own_increment():
    x, d1, d2 = rand_state(15), rand_state(16), rand_state(17)
    once, first = apply_edit(x, d1)
    both = apply(once, d2, select=Selection(components="wkv"))
    out, want = leaves(revert(both, first)), leaves(apply(x, d2, select=Selection(components="wkv")))
    for c in COMPONENTS:
        np.testing.assert_allclose(out[c], want[c], atol=8 * EPS)


def test_interpolate_is_exact_at_both_ends_and_linear_between():
    a, b = rand_state(18), rand_state(19)
    assert_identical(interpolate(a, b, 0.0), a)
    assert_identical(interpolate(a, b, 1.0), b)
    mid = leaves(interpolate(a, b, 0.5))
    for c in COMPONENTS:
        np.testing.assert_allclose(mid[c], (leaves(a)[c] + leaves(b)[c]) / 2, atol=4 * EPS)
    check_slices(interpolate(a, b, 1.0, select=Selection(layers=[1])), b, a,
                 ([1], COMPONENTS, None))


def test_one_delta_applies_to_a_batch_of_states_like_a_loop():
    states, d = rand_state(20, (3,)), rand_state(21)
    sel = Selection(layers=[1, 2], heads=[0])
    batched = apply(states, d, alpha=0.5, select=sel)
    for i in range(3):
        one = apply(jax.tree.map(lambda x, i=i: x[i], states), d, alpha=0.5, select=sel)
        assert_identical(jax.tree.map(lambda x, i=i: x[i], batched), one)


def test_ops_vmap_over_states_and_deltas_like_a_loop():
    states, deltas = rand_state(22, (3,)), rand_state(23, (3,))
    sel = Selection(layers=[0], components=("wkv", "ffn_shift"))
    ops = {
        "apply": lambda s, d: apply(s, d, alpha=2.0, select=sel),
        "transplant": lambda s, d: transplant(s, d, select=sel),
        "interpolate": lambda s, d: interpolate(s, d, 0.25, select=sel),
        "delta": delta,
    }
    for name, op in ops.items():
        mapped = jax.vmap(op)(states, deltas)
        direct = op(states, deltas)
        for i in range(3):
            looped = op(*(jax.tree.map(lambda x, i=i: x[i], t) for t in (states, deltas)))
            item = lambda t, i=i: jax.tree.map(lambda x: x[i], t)
            for c in COMPONENTS:
                np.testing.assert_allclose(getattr(item(mapped), c), getattr(looped, c),
                                           rtol=1e-6, err_msg=name)
                np.testing.assert_array_equal(getattr(item(direct), c), getattr(looped, c))


def test_edit_records_vmap_and_revert_per_item():
    states, deltas = rand_state(24, (3,)), rand_state(25, (3,))
    edited, records = jax.vmap(lambda s, d: apply_edit(s, d))(states, deltas)
    assert isinstance(records, Edit)
    assert_identical(jax.vmap(revert)(edited, records), states)


def test_changing_selection_alpha_or_values_never_retraces(monkeypatch):
    chex.clear_trace_counter()
    for name in ("_add", "_pick", "_lerp", "_scale", "_revert", "_sub"):
        kernel = getattr(algebra, name)
        monkeypatch.setattr(algebra, name, jax.jit(chex.assert_max_traces(kernel.__wrapped__, 1)))
    x = rand_state(26)
    for seed, spec in enumerate(SELECTIONS):
        sel, d = Selection(*spec), rand_state(100 + seed)
        edited, record = apply_edit(x, d, alpha=0.1 * seed, select=sel)
        undo(edited, d, alpha=0.1 * seed, select=sel)
        revert(edited, record)
        transplant(x, d, select=sel)
        interpolate(x, d, 0.1 * seed, select=sel)
        scale(d, seed, select=sel)
        delta(edited, x)


def test_states_of_different_models_are_rejected():
    x = rand_state(27)
    for other in (rand_state(28, layers=L + 1), rand_state(28, heads=H + 1),
                  rand_state(28, heads=2 * H, size=N // 2)):
        with pytest.raises(StateMismatchError, match="different models"):
            apply(x, other)
        with pytest.raises(StateMismatchError, match="different models"):
            transplant(x, other)


def test_batch_shapes_that_do_not_broadcast_are_rejected():
    with pytest.raises(StateMismatchError, match=r"batch shapes do not broadcast: state \(3,\)"):
        apply(rand_state(29, (3,)), rand_state(30, (4,)))
    with pytest.raises(StateMismatchError, match="batch shapes"):
        interpolate(rand_state(29, (3, 3)), rand_state(30, (2,)), 0.5)


def test_malformed_states_are_rejected():
    x = rand_state(31)
    with pytest.raises(StateMismatchError, match="wkv is bfloat16"):
        apply(x, x.replace(wkv=x.wkv.astype(jnp.bfloat16)))
    with pytest.raises(StateMismatchError, match="is not a State"):
        apply(x, x.replace(att_shift=x.att_shift[..., :-1]))
    with pytest.raises(TypeError, match="must be a rwkv_jax.State"):
        apply(x, {"wkv": x.wkv})
    with pytest.raises(TypeError, match="must be an editing.Selection"):
        apply(x, x, select=[0])
    with pytest.raises(TypeError, match="must be an editing.Edit"):
        revert(x, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_deltas_are_rejected_naming_component_and_layer(bad):
    x, d = rand_state(32), rand_state(33)
    poisoned = d.replace(ffn_shift=d.ffn_shift.at[2, 5].set(bad))
    with pytest.raises(NonFiniteDeltaError, match=r"ffn_shift in layers \[2\]"):
        apply(x, poisoned)
    with pytest.raises(NonFiniteDeltaError):
        undo(x, poisoned)
    with pytest.raises(NonFiniteDeltaError, match=r"wkv in layers \[0\]"):
        apply(x, d.replace(wkv=d.wkv.at[0, 1, 2, 3].set(bad)))


def test_non_finite_or_non_scalar_strengths_are_rejected():
    x, d = rand_state(34), rand_state(35)
    with pytest.raises(ValueError, match="alpha must be finite"):
        apply(x, d, alpha=np.nan)
    with pytest.raises(ValueError, match="alpha must be a scalar"):
        apply(x, d, alpha=np.ones(2))
    with pytest.raises(ValueError, match="t must be finite"):
        interpolate(x, d, np.inf)


def test_selection_that_does_not_fit_the_state_is_rejected():
    with pytest.raises(ValueError, match="out of range"):
        apply(rand_state(36), rand_state(37), select=Selection(layers=[L]))
