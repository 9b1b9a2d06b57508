"""Sparse deltas (MEMOIR's idea, in the state): each edit keeps only its largest entries, so
successive edits write mostly disjoint parts of the state and disturb one another less.

`sparsify` keeps, per wkv head, the top `fraction` of the delta's N*N entries by magnitude (and
per layer the top `fraction` of each token-shift vector), or with `by="heads"` the top `fraction`
of each layer's heads by norm (for the shift vectors: the head-sized slices). `support` is the set
a sparse delta writes, and `overlap` how much two edits' supports share, the measure of how far
apart successive edits stay.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from editing.algebra import Delta
from editing.methods import CaseEdit, DeltaEdit, ModelLike, register
from rwkv_jax.batch import Reader
from rwkv_jax.state import State

BY = ("entries", "heads")


def _top(x: jax.Array, k: int) -> jax.Array:
    # x [..., M] -> bool [..., M] with exactly k entries set per row: the k largest |x|
    _, idx = jax.lax.top_k(jnp.abs(x), k)
    return jnp.put_along_axis(jnp.zeros(x.shape, bool), idx, True, axis=-1, inplace=False)


def _keep(n: int, fraction: float) -> int:
    return max(1, math.ceil(fraction * n))


def _entries(x: jax.Array, fraction: float, rows: int) -> jax.Array:
    # the mask over the last `rows` axes, flattened: wkv heads [N, N] or shift vectors [D]
    shape = x.shape
    flat = x.reshape(*shape[:x.ndim - rows], -1)
    return _top(flat, _keep(flat.shape[-1], fraction)).reshape(shape)


def _heads(norms: jax.Array, fraction: float) -> jax.Array:
    # norms [..., H] -> bool [..., H]: the top heads
    return _top(norms, _keep(norms.shape[-1], fraction))


def _wkv_heads(wkv: jax.Array, fraction: float) -> jax.Array:
    # wkv [..., L, H, N, N] -> whole heads kept
    keep = _heads(jnp.sqrt(jnp.sum(jnp.square(wkv), axis=(-2, -1))), fraction)
    return jnp.broadcast_to(keep[..., None, None], wkv.shape)


def _shift_heads(shift: jax.Array, fraction: float, n_head: int) -> jax.Array:
    # shift [..., L, D] -> its head-sized slices [..., L, H, D / H] kept whole
    sliced = shift.reshape(*shift.shape[:-1], n_head, -1)
    keep = _heads(jnp.sqrt(jnp.sum(jnp.square(sliced), axis=-1)), fraction)
    return jnp.broadcast_to(keep[..., None], sliced.shape).reshape(shift.shape)


def support(delta: Delta, fraction: float, by: str = "entries") -> State:
    """The entries `sparsify` keeps, as a bool `State`-shaped mask (batch axes allowed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if by not in BY:
        raise ValueError(f"by must be one of {BY}, got {by!r}")
    n_head = delta.wkv.shape[-3]
    if by == "entries":
        return delta.replace(wkv=_entries(delta.wkv, fraction, 2), att_shift=_entries(delta.att_shift, fraction, 1),
                             ffn_shift=_entries(delta.ffn_shift, fraction, 1))
    return delta.replace(wkv=_wkv_heads(delta.wkv, fraction),
                         att_shift=_shift_heads(delta.att_shift, fraction, n_head),
                         ffn_shift=_shift_heads(delta.ffn_shift, fraction, n_head))


def sparsify(delta: Delta, fraction: float, by: str = "entries") -> Delta:
    """`delta` with everything outside `support(delta, fraction, by)` set to zero."""
    mask = support(delta, fraction, by)
    return jax.tree.map(lambda d, m: jnp.where(m, d, jnp.zeros_like(d)), delta, mask)


def overlap(a: State, b: State) -> Float[Array, ""]:
    """The share of `a`'s written entries that `b` writes too (masks from `support`), over
    every component; 0 when two edits touch disjoint parts of the state."""
    both = sum(jnp.sum(x & y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    return both / sum(jnp.sum(x) for x in jax.tree.leaves(a))


@register
@dataclasses.dataclass(frozen=True)
class SparseEdit(DeltaEdit):
    """`delta` keeping only its largest part: per wkv head the top `fraction` of entries (or, with
    `by="heads"`, the top `fraction` of heads by norm), so many edits share little of the state.
    Every `delta` option applies before the sparsification."""

    name: ClassVar[str] = "sparse"
    fraction: float = 0.1
    by: str = "entries"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.fraction, bool) or not 0 < float(self.fraction) <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if self.by not in BY:
            raise ValueError(f"by must be one of {BY}, got {self.by!r}")
        object.__setattr__(self, "fraction", float(self.fraction))

    def deltas(self, model: ModelLike, cases: Sequence[CaseEdit], states: State | None = None,
               reader: Reader | None = None) -> Delta:
        return sparsify(super().deltas(model, cases, states, reader), self.fraction, self.by)
