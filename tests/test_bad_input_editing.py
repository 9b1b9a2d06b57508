"""Editing calls given lookalike or malformed selections: each is refused with a specific error or
does exactly what it names; nothing is edited by a selection meant for something else."""

import jax.numpy as jnp
import numpy as np
import pytest

import editing
from editing import Selection, get_method
from rwkv_jax import Config
from rwkv_jax.state import State


def ones_delta(cfg: Config) -> State:
    zeros = State.zeros(cfg)
    return State(*(jnp.ones_like(x) for x in (zeros.wkv, zeros.att_shift, zeros.ffn_shift)))


def changed_layers(cfg: Config, select: Selection) -> list[int]:
    edited = editing.apply(State.zeros(cfg), ones_delta(cfg), select=select)
    return np.flatnonzero(np.asarray(edited.att_shift).any(axis=1)).tolist()


def test_a_bool_mask_never_shares_a_cached_mask_with_an_index_list():
    cfg = Config.default(2, 128, 300)
    masks, indices = Selection(layers=[True, False]), Selection(layers=[1, 0])
    assert masks != indices and indices != masks
    assert changed_layers(cfg, indices) == [0, 1]  # fills the cache first
    assert changed_layers(cfg, masks) == [0]
    heads = Selection(heads=[True, False], components="wkv"), Selection(heads=[1, 0], components="wkv")
    assert heads[0] != heads[1]
    assert heads[1].masks(2, 2).wkv.all() and not heads[0].masks(2, 2).wkv[:, 1].any()


def test_a_mask_of_the_wrong_length_is_refused_after_its_index_twin_was_cached():
    Selection(layers=[1, 0]).masks(3, 2)  # cached for a 3-layer model
    with pytest.raises(ValueError, match="layers mask has 2 entries but the model has 3"):
        Selection(layers=[True, False]).masks(3, 2)


def test_a_lone_layer_index_selects_that_layer():
    cfg = Config.default(3, 128, 300)
    assert changed_layers(cfg, Selection(layers=1)) == [1]
    assert get_method("delta", layers=1).layers == (1,)
    with pytest.raises(TypeError, match="layers must be ints or one bool per layer, got True"):
        Selection(layers=True)
    with pytest.raises(TypeError, match="layers must be ints or one bool per layer, got 1.5"):
        Selection(layers=1.5)


def test_a_list_mixing_bools_and_ints_is_refused_rather_than_cast():
    with pytest.raises(TypeError, match=r"layers must be ints or one bool per layer, got \[True, 1\]"):
        Selection(layers=[True, 1])
    assert Selection(layers=np.array([False, True])).layers == Selection(layers=[False, True]).layers
