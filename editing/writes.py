"""Closed-form writes into wkv heads: the least-squares key -> value write, its erase, truncation.

A head's state `S` `[value, key]` is read as `y = S r`. Given read keys `R` `[N, m]` (one per
column) and the reads `Y` `[N, m]` they should give, the smallest change (Frobenius) with
`(S + dS) R = Y` is `dS = (Y - S R) R^+` (ROME / MEMIT / Larimar's least-squares write, survey
§5.3 E1). A ridge `lam` gives `(Y - S R)(R^T R + lam I)^-1 R^T` instead, which damps directions
the keys barely span. Preserved keys `K` `[N, p]` stay exactly as they read (`dS K = 0`) when the
write goes only through the part of `R` outside `span(K)` (AlphaEdit's null-space projection).
Pseudo-inverses come from an SVD, so collinear keys and `lam = 0` are well defined.

Every function takes one head and broadcasts over leading batch axes (layers, heads, cases).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _rank_tol(s_max: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    # numpy's pinv cut-off, max(shape) * eps * s_max, with 10x headroom for a projection's residue
    return 10 * max(shape) * jnp.finfo(s_max.dtype).eps * s_max


def _ridge_pinv(a: jax.Array, lam: float, scale: jax.Array) -> jax.Array:
    # a [N, m] -> [m, N]: (a^T a + lam I)^-1 a^T, and the pseudo-inverse a^+ at lam = 0; singular
    # values small next to `scale` (the unprojected keys' largest) count as zero
    u, s, vt = jnp.linalg.svd(a, full_matrices=False)
    inv = jnp.where(s > _rank_tol(scale, a.shape), s / (jnp.square(s) + lam), 0.0)
    return (vt.T * inv[None]) @ u.T


def _null_projector(keys: jax.Array) -> jax.Array:
    # keys [N, p] -> [N, N]: the orthogonal projector onto the complement of span(keys)
    u, s, _ = jnp.linalg.svd(keys, full_matrices=False)
    basis = jnp.where(s > _rank_tol(s.max(), keys.shape), u, 0.0)
    return jnp.eye(keys.shape[0], dtype=keys.dtype) - basis @ basis.T


def _write(state, keys, targets, lam, preserved):
    # state [N, N], keys [N, m], targets [N, m], preserved [N, p] or None -> dS [N, N]
    scale = jnp.linalg.norm(keys, ord=2)
    if preserved is None:
        return (targets - state @ keys) @ _ridge_pinv(keys, lam, scale)
    null = _null_projector(preserved)
    # The write already lies in span(null); projecting it once more holds `dS K = 0` to fp32
    # precision even where the projected keys are ill-conditioned (their SVD's error grows with it).
    return (targets - state @ keys) @ _ridge_pinv(null @ keys, lam, scale) @ null


def _check(state: jax.Array, keys: jax.Array, targets: jax.Array | None,
           preserved: jax.Array | None, lam: float) -> None:
    if state.shape[-1] != state.shape[-2]:
        raise ValueError(f"a wkv head state is square [..., N, N], got {state.shape}")
    N = state.shape[-1]
    if keys.ndim < 2 or keys.shape[-2] != N:
        raise ValueError(f"keys must be [..., {N}, m] (one key per column), got {keys.shape}")
    if keys.shape[-1] == 0:
        raise ValueError("keys is empty: a write needs at least one read key")
    if targets is not None and targets.shape[-2:] != keys.shape[-2:]:
        raise ValueError(f"targets {targets.shape} must match keys {keys.shape} in the last two axes")
    if preserved is not None and (preserved.ndim < 2 or preserved.shape[-2] != N or not preserved.shape[-1]):
        raise ValueError(f"preserved keys must be [..., {N}, p] with p >= 1, got {preserved.shape}")
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    for name, x in (("state", state), ("keys", keys), ("targets", targets), ("preserved", preserved)):
        if x is not None and not isinstance(x, jax.core.Tracer) and not bool(jnp.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or Inf")


def write(state: Float[Array, "*#batch N N"], keys: Float[Array, "*#batch N m"],
          targets: Float[Array, "*#batch N m"], *, lam: float = 0.0,
          preserved: Float[Array, "*#batch N p"] | None = None) -> Float[Array, "*batch N N"]:
    """The least-squares change `dS` with `(state + dS) @ keys ~= targets`, keeping
    `dS @ preserved = 0`. Leading axes broadcast.
    """
    _check(state, keys, targets, preserved, lam)
    if preserved is None:
        one = lambda s, r, y: _write(s, r, y, lam, None)
        return jnp.vectorize(one, signature="(n,n),(n,m),(n,m)->(n,n)")(state, keys, targets)
    one = lambda s, r, y, p: _write(s, r, y, lam, p)
    return jnp.vectorize(one, signature="(n,n),(n,m),(n,m),(n,p)->(n,n)")(state, keys, targets, preserved)


def erase(state: Float[Array, "*#batch N N"], keys: Float[Array, "*#batch N m"], *, lam: float = 0.0,
          preserved: Float[Array, "*#batch N p"] | None = None) -> Float[Array, "*batch N N"]:
    """Larimar's selective forgetting: `dS = -S R (R^T R + lam I)^-1 R^T`, the write whose target
    reads along `keys` are zero. Shapes as in `write`."""
    return write(state, keys, jnp.zeros_like(keys), lam=lam, preserved=preserved)


def truncate(x: Float[Array, "*batch N N"], rank: int) -> Float[Array, "*batch N N"]:
    """The best rank-`rank` approximation of every `[N, N]` matrix in `x`: its top singular pairs
    (a delta head's "value" and "address" directions)."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    return (u[..., :rank] * s[..., None, :rank]) @ vt[..., :rank, :]
