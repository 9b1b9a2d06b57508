"""Inspection of deltas and states: norms and cosine similarities per head, layer and component.

All statistics come from sums of elementwise products at the finest grain (a wkv head, a layer's
token-shift vector); those sums add up to every coarser grain, so one pass gives them all.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from editing import checks
from editing.algebra import align_ranks
from rwkv_jax.state import COMPONENTS, State


@flax.struct.dataclass
class Breakdown:
    """One statistic of a state or delta at every grain. Plain float32 arrays; `*B` are the
    operands' (broadcast) batch axes.

    Attributes:
      wkv_heads: per wkv head.
      wkv: the whole wkv state of each layer.
      att_shift: the time-mix token-shift buffer of each layer.
      ffn_shift: the channel-mix token-shift buffer of each layer.
      layers: all three components of each layer together.
      total: the whole state.
    """

    wkv_heads: Float[Array, "*B L H"]
    wkv: Float[Array, "*B L"]
    att_shift: Float[Array, "*B L"]
    ffn_shift: Float[Array, "*B L"]
    layers: Float[Array, "*B L"]
    total: Float[Array, "*B"]

    def unit(self, component: str) -> Float[Array, "*B L"] | Float[Array, "*B L H"]:
        """The statistic per unit of a state component: per wkv head, per shift vector."""
        return self.wkv_heads if State.has_heads(component) else getattr(self, component)


def _sums(a: State, b: State) -> Breakdown:
    """Sum of `a * b` within every grain (elementwise, so no reduced-precision matmul on GPUs)."""
    # per unit: [B..., L, H] for wkv, [B..., L] for the shifts
    units = {c: (getattr(a, c) * getattr(b, c)).sum(State.unit_axes(c)) for c in COMPONENTS}
    per_layer = {c: u.sum(-1) if State.has_heads(c) else u for c, u in units.items()}  # [B..., L]
    layers = sum(per_layer.values())
    return Breakdown(wkv_heads=units["wkv"], **per_layer, layers=layers, total=layers.sum(-1))


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
