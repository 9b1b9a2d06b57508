"""State algebra: deltas, applying and undoing them, transplants, interpolation and scaling.

Every operation is one `jax.tree.map` over the `State` leaves that writes new values where the
selection's mask is set and keeps the old ones elsewhere (`jnp.where`, so unselected slices are
bit-for-bit untouched). Leaves may carry leading batch axes; two operands broadcast over them
(one delta applied to a batch of states, say). Public functions check their arguments, then call
a jitted kernel that has no checks; the selection reaches the kernel as mask arrays, so neither a
new selection nor a new alpha recompiles it.
"""

from __future__ import annotations

from typing import TypeAlias

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from editing import checks
from editing.select import ALL, Selection
from rwkv_jax.state import State

Delta: TypeAlias = State
"""A difference of two states (`new - old`), laid out like a `State`."""


def align_ranks(*xs: jax.Array) -> list[jax.Array]:
    """Leading unit axes so all operands have the same rank: batch axes broadcast explicitly,
    which also keeps the kernels valid under `jax_numpy_rank_promotion="raise"`."""
    n = max(x.ndim for x in xs)
    return [x.reshape((1,) * (n - x.ndim) + x.shape) for x in xs]


def _where(mask: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(*align_ranks(mask, new, old))


@jax.jit
def _sub(a: State, b: State) -> State:
    return jax.tree.map(lambda x, y: jnp.subtract(*align_ranks(x, y)), a, b)


@jax.jit
def _add(state: State, delta: Delta, alpha: jax.Array, mask: State) -> State:
    def leaf(x, d, m):
        x, d = align_ranks(x, d)
        return _where(m, x + alpha * d, x)

    return jax.tree.map(leaf, state, delta, mask)


@jax.jit
def _pick(mask: State, new: State, old: State) -> State:
    return jax.tree.map(_where, mask, new, old)


@jax.jit
def _lerp(a: State, b: State, t: jax.Array, mask: State) -> State:
    # (1 - t) a + t b rather than a + t (b - a): exact at both ends, t = 0 gives a, t = 1 gives b.
    def leaf(x, y, m):
        x, y = align_ranks(x, y)
        return _where(m, (1 - t) * x + t * y, x)

    return jax.tree.map(leaf, a, b, mask)


@jax.jit
def _scale(x: State, factor: jax.Array, mask: State) -> State:
    return jax.tree.map(lambda v, m: _where(m, factor * v, v), x, mask)


@jax.jit
def _revert(state: State, before: State, after: State) -> State:
    def leaf(s, b, a):
        s, b, a = align_ranks(s, b, a)
        return jnp.where(s == a, b, s - (a - b))

    return jax.tree.map(leaf, state, before, after)


def _masks(select: Selection, *named: tuple[str, State]) -> State:
    """Checks that the states belong together and resolves the selection against their model."""
    if not isinstance(select, Selection):
        raise TypeError(f"select must be an editing.Selection, got {type(select).__name__}")
    checks.batch_shape(*named)
    name, first = named[0]
    L, H, _, _ = checks.model_shape(first, name)
    return select.masks(L, H)


def _scalar(value: float | Float[Array, ""], name: str) -> jax.Array:
    value = jnp.asarray(value, jnp.float32)
    if value.ndim:
        raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
    if not isinstance(value, jax.core.Tracer) and not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def delta(new: State, old: State) -> Delta:
    """`new - old`: the edit that turns `old` into `new` (paper Eq. 3)."""
    checks.batch_shape(("new", new), ("old", old))
    return _sub(new, old)


def apply(state: State, delta: Delta, *, alpha: float | Float[Array, ""] = 1.0,
          select: Selection = ALL) -> State:
    """`state + alpha * delta` on the selected slices (paper Eq. 4 with a strength and a scope)."""
    mask = _masks(select, ("state", state), ("delta", delta))
    checks.finite(delta)
    return _add(state, delta, _scalar(alpha, "alpha"), mask)


def undo(state: State, delta: Delta, *, alpha: float | Float[Array, ""] = 1.0,
         select: Selection = ALL) -> State:
    """Removes an applied delta: `apply` with `-alpha`, so it also works on a state that has read
    more tokens or holds other edits since. Right after `apply` it returns the original up to one
    float32 rounding per element (`(x + d) - d` need not equal `x`); `revert` is exact."""
    return apply(state, delta, alpha=-_scalar(alpha, "alpha"), select=select)


@flax.struct.dataclass
class Edit:
    """An applied edit, kept so that `revert` can restore the pre-edit state exactly.

    Attributes:
      before: the state the edit was applied to.
      after: the state it produced.
    """

    before: State
    after: State


def apply_edit(state: State, delta: Delta, *, alpha: float | Float[Array, ""] = 1.0,
               select: Selection = ALL) -> tuple[State, Edit]:
    """`apply`, also returning the `Edit` record that `revert` needs."""
    after = apply(state, delta, alpha=alpha, select=select)
    return after, Edit(before=state, after=after)


def revert(state: State, edit: Edit) -> State:
    """Takes an edit back out of `state`.

    Entries still equal to what the edit wrote get their pre-edit values back bit for bit, so
    `revert(apply_edit(s, d)[0], edit)` is `s` exactly. Entries that changed since (more tokens
    read, further edits) lose the edit's increment `after - before` instead; that is first order
    only, since the recurrence has transformed the increment since it was added.
    """
    if not isinstance(edit, Edit):
        raise TypeError(f"edit must be an editing.Edit, got {type(edit).__name__}")
    checks.batch_shape(("state", state), ("edit.before", edit.before), ("edit.after", edit.after))
    return _revert(state, edit.before, edit.after)


def transplant(dst: State, src: State, *, select: Selection = ALL) -> State:
    """`dst` with the selected slices taken from `src` (paper §3's causal transplant)."""
    return _pick(_masks(select, ("dst", dst), ("src", src)), src, dst)


def interpolate(a: State, b: State, t: float | Float[Array, ""], *, select: Selection = ALL) -> State:
    """`(1 - t) a + t b` on the selected slices, `a` elsewhere."""
    mask = _masks(select, ("a", a), ("b", b))
    return _lerp(a, b, _scalar(t, "t"), mask)


def scale(x: State, factor: float | Float[Array, ""], *, select: Selection = ALL) -> State:
    """`factor * x` on the selected slices, `x` elsewhere (e.g. zeroing a delta's token shift)."""
    return _scale(x, _scalar(factor, "factor"), _masks(select, ("x", x)))
