"""The RWKV-7 (x070) forward pass as pure functions over the params pytree and a `State`.

Written for one sequence (`tokens [T]`); batch with `jax.vmap`. Layers are stacked and scanned;
`rwkv_jax.decode` runs the same `block` per layer, on params and a state laid out for a decode loop.
Activations run in the params dtype; the wkv recurrence, the decay and the state are float32.
Every matrix is read through `rwkv_jax.quant.linear`, so `quant.quantize`d params run here too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from rwkv_jax.config import Config
from rwkv_jax.params import Params
from rwkv_jax.quant import Narrow, linear, lookup, loop_safe
from rwkv_jax.state import State
from rwkv_jax.wkv import Heads, HeadState, Impl, wkv_states
from rwkv_jax.wkv import wkv as wkv_recurrence

DECAY_SCALE = 0.606531  # e^-0.5, as in the official kernels: log w = -e^-0.5 * sigmoid(.)
LN_EPS = 1e-5
GROUP_NORM_EPS = 64e-5
F32 = jnp.float32


def layer_norm(x: Float[Array, "... D"], p: Params, eps: float = LN_EPS) -> Float[Array, "... D"]:
    """LayerNorm over the last axis, computed in float32, returned in x's dtype."""
    h = x.astype(F32)
    mean = h.mean(-1, keepdims=True)
    var = jnp.square(h - mean).mean(-1, keepdims=True)
    scale, shift = (jnp.broadcast_to(p[n].astype(F32), h.shape) for n in ("weight", "bias"))
    h = (h - mean) * lax.rsqrt(var + eps) * scale + shift
    return h.astype(x.dtype)


def _shifted(x: jax.Array, prev: jax.Array) -> jax.Array:
    """The previous token's activations: `prev` for the first token. x [T, D], prev [D]."""
    return jnp.concatenate([prev[None].astype(x.dtype), x[:-1]], axis=0)


def _last(x: jax.Array, prev: jax.Array, length: jax.Array | None) -> jax.Array:
    """The shift state after the valid tokens: x[length - 1], or `prev` if none is valid."""
    if length is None:
        return x[-1].astype(F32)
    return jnp.where(length > 0, x[jnp.maximum(length - 1, 0)].astype(F32), prev)


@flax.struct.dataclass
class Trace:
    """Per-layer activations for research use.

    Attributes:
      hidden: the residual stream entering each block, then after the last one.
      states: the `State` after every token, with a leading `[T]` axis on each field.
    """

    hidden: Float[Array, "L+1 T D"]
    states: State


# (r, log_w, k, v, neg_kk, kk_a, state) -> (y, what the recurrence keeps of the state):
# `wkv` (the final state) or `wkv_states` (the state after every token).
Recurrence = Callable[..., tuple[Heads, Float[Array, "... H N N"]]]


def time_mix(
    p: Params,
    cfg: Config,
    x: Float[Array, "T D"],
    shift: Float[Array, " D"],
    wkv_state: HeadState,
    v_first: Float[Array, "T D"],
    *,
    is_first: bool | Bool[Array, ""],
    valid: Bool[Array, " T"] | None,
    recurrence: Recurrence,
) -> tuple[Float[Array, "T D"], Float[Array, "... H N N"], Float[Array, "T D"]]:
    """The attention-replacement block: token shift, the wkv recurrence, a per-head GroupNorm.

    x is the ln1 output, shift the previous token's, v_first layer 0's values (written there:
    `is_first`), valid the tokens that reach the state (None: all).
    Returns (out, what `recurrence` keeps of the wkv state, v_first).
    """
    T, H, N = x.shape[0], cfg.n_head, cfg.head_size
    xx = _shifted(x, shift) - x
    xr, xw, xk, xv, xa, xg = (x + xx * p[n][None] for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))

    # [T, D] each; a is the in-context learning rate
    r = linear(xr, p["receptance"])
    w = linear(jnp.tanh(linear(xw, p["w1"])), p["w2"])
    k = linear(xk, p["key"])
    v = linear(xv, p["value"])
    a = jax.nn.sigmoid(p["a0"][None] + linear(linear(xa, p["a1"]), p["a2"]))
    g = linear(jax.nn.sigmoid(linear(xg, p["g1"])), p["g2"])

    kk = (k * p["k_k"][None]).reshape(T, H, N)
    kk = kk / jnp.maximum(jnp.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)
    k = k * (1 + (a - 1) * p["k_a"][None])
    v_first = jnp.where(is_first, v, v_first)
    v = jnp.where(is_first, v, v + (v_first - v) * jax.nn.sigmoid(p["v0"][None] + linear(linear(xv, p["v1"]), p["v2"])))
    log_w = -DECAY_SCALE * jax.nn.sigmoid((p["w0"][None] + w).astype(F32))

    heads = lambda z: z.reshape(T, H, N).astype(F32)
    r_h, k_h, v_h, a_h = heads(r), heads(k), heads(v), heads(a)
    log_w, kk_a = heads(log_w), kk.astype(F32) * a_h
    if valid is not None:  # tokens past the length leave the state untouched
        keep = valid[:, None, None]
        log_w, k_h, kk_a = jnp.where(keep, log_w, 0.0), jnp.where(keep, k_h, 0.0), jnp.where(keep, kk_a, 0.0)
    y, wkv_out = recurrence(r_h, log_w, k_h, v_h, -kk.astype(F32), kk_a, wkv_state)

    # GroupNorm with one group per head, then the per-head "bonus" (r . k * r_k) v.
    mean = y.mean(-1, keepdims=True)
    var = jnp.square(y - mean).mean(-1, keepdims=True)
    y = (y - mean) * lax.rsqrt(var + GROUP_NORM_EPS)
    y = y.reshape(T, H * N) * p["ln_x"]["weight"][None].astype(F32) + p["ln_x"]["bias"][None].astype(F32)
    y = y.astype(x.dtype)
    bonus = (r_h * k_h * p["r_k"][None].astype(F32)).sum(-1, keepdims=True) * v_h
    y = y + bonus.reshape(T, H * N).astype(x.dtype)
    return linear(y * g, p["output"]), wkv_out, v_first


def channel_mix(p: Params, x: Float[Array, "T D"], shift: Float[Array, " D"]) -> Float[Array, "T D"]:
    """Feed-forward block with token shift and relu^2. x is the ln2 output."""
    k = x + (_shifted(x, shift) - x) * p["x_k"][None]
    return linear(jnp.square(jax.nn.relu(linear(k, p["key"]))), p["value"])


@flax.struct.dataclass
class BlockOut:
    """What one block leaves: the residual stream, layer 0's values, the layer's new `State` (no
    layer axis; its wkv as the recurrence keeps it) and the ln1 and ln2 outputs (the token-shift
    state after every token)."""

    x: Float[Array, "T D"]
    v_first: Float[Array, "T D"]
    state: State
    ln1: Float[Array, "T D"]
    ln2: Float[Array, "T D"]


def block(p: Params, cfg: Config, x: Float[Array, "T D"], v_first: Float[Array, "T D"], layer: State, *,
          is_first: bool | Bool[Array, ""], valid: Bool[Array, " T"] | None, length: Int[Array, ""] | None,
          recurrence: Recurrence) -> BlockOut:
    """One layer: x and its `State` (no layer axis) in, `BlockOut` out."""
    h = layer_norm(x, p["ln1"])
    dx, wkv_out, v_first = time_mix(p["att"], cfg, h, layer.att_shift, layer.wkv, v_first,
                                    is_first=is_first, valid=valid, recurrence=recurrence)
    x_mid = x + dx
    f = layer_norm(x_mid, p["ln2"])
    new = State(wkv=wkv_out, att_shift=_last(h, layer.att_shift, length),
                ffn_shift=_last(f, layer.ffn_shift, length))
    return BlockOut(x=x_mid + channel_mix(p["ffn"], f, layer.ffn_shift), v_first=v_first, state=new,
                    ln1=h, ln2=f)


def embed(emb: Float[Array, "V D"] | Narrow, ln0: Params, tokens: Int[Array, " T"]) -> Float[Array, "T D"]:
    """The normalised embeddings of the tokens, entering block 0."""
    return layer_norm(lookup(emb, tokens), ln0)


def _layers(params: Params, cfg: Config, tokens: jax.Array, state: State, *, length: jax.Array | None,
            recurrence: Recurrence) -> tuple[jax.Array, BlockOut]:
    """Every block over stacked params and a stacked state, scanned over layers. Returns the
    final hidden `[T, D]` and the blocks' outputs stacked `[L, ...]` (their `x` is each block's
    input)."""
    x = embed(params["emb"], params["ln0"], tokens)
    valid = None if length is None else jnp.arange(tokens.shape[0]) < length

    def body(carry, layer):
        x, v_first = carry
        p, layer_state, index = layer
        out = block(p, cfg, x, v_first, layer_state, is_first=index == 0, valid=valid, length=length,
                    recurrence=recurrence)
        return (out.x, out.v_first), out.replace(x=x, v_first=None)

    (x, _), outs = lax.scan(body, (x, jnp.zeros_like(x)), (loop_safe(params["blocks"]), state, jnp.arange(cfg.n_layer)))
    return x, outs


def check_state(state: State, cfg: Config) -> None:
    """Refuses a state of another model (or a batch of states: `jax.vmap` over them) with a message
    naming the shapes, instead of a shape error deep inside `lax.scan`. Runs while tracing, on static
    shapes: nothing of it is in the compiled code."""
    if not isinstance(state, State):
        raise TypeError(f"state must be an rwkv_jax.State, got {type(state).__name__}")
    state.check(cfg)
    if state.batch_shape:
        raise ValueError(f"state has batch axes {state.batch_shape}; forward, step and the decode step "
                         "read one sequence: jax.vmap them over a batch of states")


def _head(params: Params, x: jax.Array) -> jax.Array:
    # x [..., D] -> logits [..., V] float32
    return linear(layer_norm(x, params["ln_out"]), params["head"]).astype(F32)


@functools.partial(jax.jit, static_argnames=("cfg", "wkv", "logits", "chunk_size"))
def forward(
    params: Params,
    cfg: Config,
    tokens: Int[Array, " T"],
    state: State | None = None,
    *,
    wkv: Impl = "chunked",
    logits: Literal["all", "last"] = "all",
    length: Int[Array, ""] | int | None = None,
    chunk_size: int = 32,
) -> tuple[Float[Array, "T V"] | Float[Array, " V"], State]:
    """Reads `tokens` from `state` (zeros if None); returns logits and the new state.

    logits: float32 for every token, or for the last valid token only with `logits="last"` (what
    generation starts from).
    length: tokens at positions >= length leave the state untouched (right-padded batches).
    wkv: "chunked" (default, fast prefill and training) or "scan" (per token).
    """
    if state is None:
        state = State.zeros(cfg)
    check_state(state, cfg)
    if logits not in ("all", "last"):
        raise ValueError(f"logits must be 'all' or 'last', got {logits!r}")
    recurrence = functools.partial(wkv_recurrence, impl=wkv, chunk_size=chunk_size)
    x, outs = _layers(params, cfg, tokens, state, length=length, recurrence=recurrence)
    if logits == "last":
        x = x[-1] if length is None else x[jnp.maximum(length - 1, 0)]
    return _head(params, x), outs.state


@functools.partial(jax.jit, static_argnames=("cfg",))
def step(params: Params, cfg: Config, token: Int[Array, ""], state: State) -> tuple[Float[Array, " V"], State]:
    """One decoding step: token -> logits, new state. A jitted decode loop runs
    `rwkv_jax.decode.decode_step` instead, on params and a state laid out for it."""
    logits, state = forward(params, cfg, jnp.reshape(token, (1,)), state, wkv="scan")
    return logits[0], state


@functools.partial(jax.jit, static_argnames=("cfg",))
def forward_trace(params: Params, cfg: Config, tokens: Int[Array, " T"],
                  state: State | None = None) -> tuple[Float[Array, "T V"], State, Trace]:
    """`forward` (per-token scan) that also returns every layer's input and every token's state."""
    if state is None:
        state = State.zeros(cfg)
    check_state(state, cfg)
    x, outs = _layers(params, cfg, tokens, state, length=None, recurrence=wkv_states)
    hidden = jnp.concatenate([outs.x, x[None]], axis=0).astype(F32)
    # per layer [L, T, ...] -> per token [T, L, ...]
    states = State(wkv=outs.state.wkv, att_shift=outs.ln1.astype(F32), ffn_shift=outs.ln2.astype(F32))
    states = jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), states)
    final = outs.state.replace(wkv=outs.state.wkv[:, -1])
    return _head(params, x), final, Trace(hidden=hidden, states=states)


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
