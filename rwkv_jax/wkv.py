"""The RWKV-7 wkv recurrence, per head, in the official [value, key] state layout.

    S_t = S_{t-1} diag(w_t) + (S_{t-1} neg_kk_t) kk_a_t^T + v_t k_t^T,      y_t = S_t r_t

with neg_kk = -kk (minus the unit removal key) and kk_a = kk * a (that key scaled by the
in-context learning rate a): the "generalized delta rule". Two implementations give the same
numbers (to float32 rounding): `wkv_scan` steps token by token (decoding, research traces) and
`wkv_chunked` does the work inside a chunk of C tokens as matrix products and only steps across
chunks (prefill and training, where a per-token scan leaves the matrix units idle).

All inputs are float32 and time-major: r, log_w, k, v, neg_kk, kk_a `[T, H, N]`; state `[H, N, N]`.
`log_w` is the log of the per-channel decay, in (-0.61, 0].
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

Impl = Literal["scan", "chunked"]
Heads = Float[Array, "T H N"]  # r, log_w, k, v, neg_kk, kk_a and the output y
HeadState = Float[Array, "H N N"]


def _step(state: jax.Array, r, w, k, v, neg_kk, kk_a) -> tuple[jax.Array, jax.Array]:
    # state [H, Nv, Nk]; vectors [H, N]
    removed = jnp.einsum("hvk,hk->hv", state, neg_kk)
    state = state * w[:, None, :] + removed[:, :, None] * kk_a[:, None, :] + v[:, :, None] * k[:, None, :]
    return state, jnp.einsum("hvk,hk->hv", state, r)


def wkv_scan(r: Heads, log_w: Heads, k: Heads, v: Heads, neg_kk: Heads, kk_a: Heads,
             state: HeadState) -> tuple[Heads, HeadState]:
    """Token-by-token recurrence. Returns y and the final state."""

    def body(s, inputs):
        r_t, lw_t, k_t, v_t, neg_kk_t, kk_a_t = inputs
        return _step(s, r_t, jnp.exp(lw_t), k_t, v_t, neg_kk_t, kk_a_t)

    state, y = lax.scan(body, state, (r, log_w, k, v, neg_kk, kk_a))
    return y, state


def wkv_states(r: Heads, log_w: Heads, k: Heads, v: Heads, neg_kk: Heads, kk_a: Heads,
               state: HeadState) -> tuple[Heads, Float[Array, "T H N N"]]:
    """`wkv_scan` for research traces. Returns y and the state after every token (the last one
    is the final state)."""

    def body(s, inputs):
        r_t, lw_t, k_t, v_t, neg_kk_t, kk_a_t = inputs
        s, y = _step(s, r_t, jnp.exp(lw_t), k_t, v_t, neg_kk_t, kk_a_t)
        return s, (y, s)

    _, (y, states) = lax.scan(body, state, (r, log_w, k, v, neg_kk, kk_a))
    return y, states


def _pad_time(x: jax.Array, n: int) -> jax.Array:
    return jnp.pad(x, ((0, n),) + ((0, 0),) * (x.ndim - 1)) if n else x


def _unit_lower_solve(a: jax.Array, rhs: jax.Array) -> jax.Array:
    """(I - a)^-1 rhs for strictly lower-triangular a `[..., C, C]`, as matrix products.

    a is nilpotent, so (I - a)^-1 = sum_{j<C} a^j = (I + a)(I + a^2)(I + a^4)...: ceil(log2 C)
    doublings. XLA's CPU triangular solve is two orders of magnitude slower than these matmuls.
    """
    power, out = a, rhs
    for i in range(max(1, (a.shape[-1] - 1).bit_length())):
        out = out + power @ out
        if (2 << i) < a.shape[-1]:
            power = power @ power
    return out


def wkv_chunked(r: Heads, log_w: Heads, k: Heads, v: Heads, neg_kk: Heads, kk_a: Heads,
                state: HeadState, *, chunk_size: int = 32) -> tuple[Heads, HeadState]:
    """Chunkwise-parallel recurrence (WY form). Returns y and the final state.

    Below, z = neg_kk and b = kk_a. Within a chunk, with D_t the cumulative decay from the chunk
    start to token t and u_t = S_{t-1} z_t the delta-rule read, every u_t and y_t is linear in
    the chunk-start state S0:
        U = P S0^T + Q,  P = (I - A_zb)^-1 (z * D_{t-1}),  Q = (I - A_zb)^-1 A_zk V
        Y = (r * D_t) S0^T + A_rb U + A_rk V
        S_end = S0 diag(D_C) + U^T (b * D_C / D) + V^T (k * D_C / D)
    where A_xy[t, s] = sum_j x_t[j] y_s[j] D_t[j] / D_s[j] over s < t (or s <= t for r).
    Only S0 -> S_end is sequential. Decays stay in float32 range because |log_w| < 0.61, so a
    chunk of 64 spans at most e^39.
    """
    if not 1 <= chunk_size <= 64:
        raise ValueError(f"chunk_size must be in [1, 64] for float32 decays, got {chunk_size}")
    z, b = neg_kk, kk_a
    T, H, N = r.shape
    C = chunk_size
    pad = -T % C
    # Padded tokens are identity updates: log_w = 0, k = b = 0.
    r, log_w, k, v, z, b = (_pad_time(x, pad) for x in (r, log_w, k, v, z, b))
    n_chunks = (T + pad) // C

    def chunks(x):  # [T, H, N] -> [n, H, C, N]
        return x.reshape(n_chunks, C, H, N).transpose(0, 2, 1, 3)

    r, log_w, k, v, z, b = (chunks(x) for x in (r, log_w, k, v, z, b))
    g_inc = jnp.cumsum(log_w, axis=2)  # log D_t
    g_exc = g_inc - log_w  # log D_{t-1}
    g_end = g_inc[:, :, -1:, :]  # log D_C
    d_inv = jnp.exp(-g_inc)
    r_d, z_d = r * jnp.exp(g_inc), z * jnp.exp(g_exc)
    k_tail, b_tail = k * jnp.exp(g_end - g_inc), b * jnp.exp(g_end - g_inc)

    strict = jnp.tril(jnp.ones((C, C), bool), -1)
    causal = jnp.tril(jnp.ones((C, C), bool))

    def inner(x, y, mask):  # [n, H, C, C]
        return jnp.where(mask, jnp.einsum("nhtj,nhsj->nhts", x, y * d_inv), 0.0)

    a_zb, a_zk = inner(z_d, b, strict), inner(z_d, k, strict)
    a_rb, a_rk = inner(r_d, b, causal), inner(r_d, k, causal)

    rhs = jnp.concatenate([z_d, jnp.einsum("nhts,nhsv->nhtv", a_zk, v)], axis=-1)
    pq = _unit_lower_solve(a_zb, rhs)
    p, q = pq[..., :N], pq[..., N:]

    def across(s0, chunk):
        p_c, q_c, v_c, k_tail_c, b_tail_c, g_end_c = chunk
        u = jnp.einsum("htk,hvk->htv", p_c, s0) + q_c
        s1 = (
            s0 * jnp.exp(g_end_c)
            + jnp.einsum("htv,htk->hvk", u, b_tail_c)
            + jnp.einsum("htv,htk->hvk", v_c, k_tail_c)
        )
        return s1, s0

    state, starts = lax.scan(across, state, (p, q, v, k_tail, b_tail, g_end))
    u = jnp.einsum("nhtk,nhvk->nhtv", p, starts) + q
    y = (
        jnp.einsum("nhtk,nhvk->nhtv", r_d, starts)
        + jnp.einsum("nhts,nhsv->nhtv", a_rb, u)
        + jnp.einsum("nhts,nhsv->nhtv", a_rk, v)
    )
    y = y.transpose(0, 2, 1, 3).reshape(n_chunks * C, H, N)[:T]
    return y, state


def wkv(r: Heads, log_w: Heads, k: Heads, v: Heads, neg_kk: Heads, kk_a: Heads, state: HeadState, *,
        impl: Impl = "chunked", chunk_size: int = 32) -> tuple[Heads, HeadState]:
    """Dispatches to one of the two implementations; both return (y, the final state)."""
    if impl == "scan":
        return wkv_scan(r, log_w, k, v, neg_kk, kk_a, state)
    if impl == "chunked":
        return wkv_chunked(r, log_w, k, v, neg_kk, kk_a, state, chunk_size=chunk_size)
    raise ValueError(f"unknown wkv implementation {impl!r}; expected 'scan' or 'chunked'")
