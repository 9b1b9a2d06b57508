"""Selection: what each way of naming layers, components and heads resolves to."""

import numpy as np
import pytest

from editing import Selection


def layers_of(sel, n_layer):
    return np.flatnonzero(sel.layer_mask(n_layer)).tolist()


def test_default_selects_every_slice_of_every_component():
    m = Selection().masks(4, 3)
    assert m.wkv.shape == (4, 3, 1, 1) and m.att_shift.shape == (4, 1) == m.ffn_shift.shape
    assert m.wkv.all() and m.att_shift.all() and m.ffn_shift.all()


@pytest.mark.parametrize(
    "layers, n_layer, expected",
    [
        (range(1, 3), 4, [1, 2]),
        ([3, 0, 3], 4, [0, 3]),
        ([-1], 4, [3]),
        ((True, False, True, False), 4, [0, 2]),
        (np.array([False, True]), 2, [1]),
        ([], 4, []),
        ("all", 5, [0, 1, 2, 3, 4]),
        # the paper's rows for a 32-layer model
        ("lower_half", 32, list(range(0, 16))),
        ("upper_half", 32, list(range(16, 32))),
        ("top_quarter", 32, list(range(24, 32))),
        # shallow models still get a non-empty top quarter
        ("top_quarter", 2, [1]),
        ("upper_half", 3, [1, 2]),
    ],
)
def test_layer_specs_resolve_to_the_named_layers(layers, n_layer, expected):
    assert layers_of(Selection(layers=layers), n_layer) == expected


def test_components_are_canonical_so_equal_selections_hash_equal():
    a = Selection(layers=range(2), components=["ffn_shift", "wkv"])
    b = Selection(layers=(0, 1), components=("wkv", "ffn_shift"))
    assert a == b and hash(a) == hash(b)
    assert a.components == ("wkv", "ffn_shift")
    assert Selection(components="all") == Selection()
    assert Selection(components="wkv").components == ("wkv",)


def test_masks_combine_layers_components_and_heads():
    m = Selection(layers=[1, 2], components=("wkv", "att_shift"), heads=[0]).masks(4, 2)
    expected_wkv = np.zeros((4, 2), bool)
    expected_wkv[[1, 2], 0] = True
    np.testing.assert_array_equal(m.wkv[:, :, 0, 0], expected_wkv)
    np.testing.assert_array_equal(m.att_shift[:, 0], [False, True, True, False])
    assert not m.ffn_shift.any()


def test_cached_masks_cannot_be_mutated():
    m = Selection().masks(2, 2)
    with pytest.raises(ValueError):
        m.wkv[0, 0, 0, 0] = False


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(components="kv"), ValueError, "unknown state components"),
        (dict(components=("wkv", "x")), ValueError, "unknown state components"),
        (dict(components="att_shift", heads=[0]), ValueError, "wkv only"),
        (dict(layers="middle"), ValueError, "unknown layer span"),
        (dict(layers=[0.5]), TypeError, "ints or one bool"),
    ],
)
def test_invalid_selections_fail_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        Selection(**kwargs)


@pytest.mark.parametrize(
    "sel, match",
    [
        (Selection(layers=[4]), r"layers \[4\] out of range"),
        (Selection(layers=[-5]), r"layers \[-5\] out of range"),
        (Selection(layers=(True, False)), "layers mask has 2 entries but the model has 4"),
        (Selection(heads=[2]), r"heads \[2\] out of range"),
        (Selection(heads=(True,)), "heads mask has 1 entries but the model has 2"),
    ],
)
def test_selections_that_do_not_fit_the_model_fail_when_resolved(sel, match):
    with pytest.raises(ValueError, match=match):
        sel.masks(4, 2)
