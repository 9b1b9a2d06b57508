"""Inspection of deltas and states: norms and cosine similarities per head, layer and component.

All statistics come from sums of elementwise products at the finest grain (a wkv head, a layer's
token-shift vector); those sums add up to every coarser grain, so one pass gives them all.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from editing import checks
from editing.algebra import align_ranks
from rwkv_jax.state import COMPONENTS, State


@flax.struct.dataclass
class Breakdown:
    """One statistic of a state or delta at every grain. Plain float32 arrays; `B...` are the
    operands' (broadcast) batch axes.

    Attributes:
      wkv_heads: `[B..., L, H]` per wkv head.
      wkv: `[B..., L]` the whole wkv state of each layer.
      att_shift: `[B..., L]` the time-mix token-shift buffer of each layer.
      ffn_shift: `[B..., L]` the channel-mix token-shift buffer of each layer.
      layers: `[B..., L]` all three components of each layer together.
      total: `[B...]` the whole state.
    """

    wkv_heads: jax.Array
    wkv: jax.Array
    att_shift: jax.Array
    ffn_shift: jax.Array
    layers: jax.Array
    total: jax.Array


def _sums(a: State, b: State) -> Breakdown:
    """Sum of `a * b` within every grain (elementwise, so no reduced-precision matmul on GPUs)."""
    heads = (a.wkv * b.wkv).sum((-2, -1))  # [B..., L, H]
    wkv = heads.sum(-1)
    att = (a.att_shift * b.att_shift).sum(-1)  # [B..., L]
    ffn = (a.ffn_shift * b.ffn_shift).sum(-1)
    layers = wkv + att + ffn
    return Breakdown(wkv_heads=heads, wkv=wkv, att_shift=att, ffn_shift=ffn, layers=layers,
                     total=layers.sum(-1))


@jax.jit
def _norms(x: State) -> Breakdown:
    return jax.tree.map(jnp.sqrt, _sums(x, x))


@jax.jit
def _cosine(a: State, b: State) -> Breakdown:
    pairs = {c: align_ranks(getattr(a, c), getattr(b, c)) for c in COMPONENTS}
    a, b = (State(**{c: p[i] for c, p in pairs.items()}) for i in (0, 1))
    return jax.tree.map(lambda ab, aa, bb: ab / (jnp.sqrt(aa) * jnp.sqrt(bb)),
                        _sums(a, b), _sums(a, a), _sums(b, b))


def norms(x: State) -> Breakdown:
    """L2 (Frobenius) norms of `x` at every grain."""
    checks.model_shape(x, "x")
    return _norms(x)


def cosine(a: State, b: State) -> Breakdown:
    """Cosine similarity of `a` and `b` at every grain; NaN where either side is all zeros."""
    checks.batch_shape(("a", a), ("b", b))
    return _cosine(a, b)
