"""The RWKV-7 (x070) forward pass as pure functions over the params pytree and a `State`.

Written for one sequence (`tokens [T]`); batch with `jax.vmap`. Layers are stacked and scanned.
Activations run in the params dtype; the wkv recurrence, the decay and the state are float32.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import flax.struct
import jax
import jax.numpy as jnp
from jax import lax

from rwkv_jax.config import Config
from rwkv_jax.params import Params
from rwkv_jax.state import State
from rwkv_jax.wkv import Impl, wkv, wkv_scan

DECAY_SCALE = 0.606531  # e^-0.5, as in the official kernels: log w = -e^-0.5 * sigmoid(.)
LN_EPS = 1e-5
GROUP_NORM_EPS = 64e-5
F32 = jnp.float32


def layer_norm(x: jax.Array, p: Params, eps: float = LN_EPS) -> jax.Array:
    """LayerNorm over the last axis, computed in float32, returned in x's dtype."""
    h = x.astype(F32)
    mean = h.mean(-1, keepdims=True)
    var = jnp.square(h - mean).mean(-1, keepdims=True)
    h = (h - mean) * lax.rsqrt(var + eps) * p["weight"].astype(F32) + p["bias"].astype(F32)
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
      hidden: `[L + 1, T, D]` the residual stream entering each block, then after the last one.
      states: the `State` after every token, with a leading `[T]` axis on each field.
    """

    hidden: jax.Array
    states: State


def time_mix(p: Params, cfg: Config, x, shift, wkv_state, v_first, is_first, valid, *,
             impl: Impl, chunk_size: int, emit_states: bool = False):
    """One attention-replacement block. x `[T, D]` is the ln1 output; returns
    (out `[T, D]`, wkv_state, v_first, and per-token wkv states when `emit_states`)."""
    T, H, N = x.shape[0], cfg.n_head, cfg.head_size
    xx = _shifted(x, shift) - x
    xr, xw, xk, xv, xa, xg = (x + xx * p[n] for n in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"))

    # [T, D] each
    r = xr @ p["receptance"]
    w = jnp.tanh(xw @ p["w1"]) @ p["w2"]
    k = xk @ p["key"]
    v = xv @ p["value"]
    a = jax.nn.sigmoid(p["a0"] + (xa @ p["a1"]) @ p["a2"])
    g = jax.nn.sigmoid(xg @ p["g1"]) @ p["g2"]

    kk = (k * p["k_k"]).reshape(T, H, N)
    kk = kk / jnp.maximum(jnp.linalg.norm(kk, axis=-1, keepdims=True), 1e-12)
    k = k * (1 + (a - 1) * p["k_a"])
    v_first = jnp.where(is_first, v, v_first)
    v = jnp.where(is_first, v, v + (v_first - v) * jax.nn.sigmoid(p["v0"] + (xv @ p["v1"]) @ p["v2"]))
    log_w = -DECAY_SCALE * jax.nn.sigmoid((p["w0"] + w).astype(F32))

    heads = lambda z: z.reshape(T, H, N).astype(F32)
    r_h, k_h, v_h, a_h = heads(r), heads(k), heads(v), heads(a)
    log_w, b = heads(log_w), kk.astype(F32) * a_h
    if valid is not None:  # tokens past the length leave the state untouched
        keep = valid[:, None, None]
        log_w, k_h, b = jnp.where(keep, log_w, 0.0), jnp.where(keep, k_h, 0.0), jnp.where(keep, b, 0.0)
    if emit_states:
        y, wkv_state, states = wkv_scan(r_h, log_w, k_h, v_h, -kk.astype(F32), b, wkv_state,
                                        emit_states=True)
    else:
        y, wkv_state = wkv(r_h, log_w, k_h, v_h, -kk.astype(F32), b, wkv_state, impl=impl,
                           chunk_size=chunk_size)
        states = None

    # GroupNorm with one group per head, then the per-head "bonus" (r . k * r_k) v.
    mean = y.mean(-1, keepdims=True)
    var = jnp.square(y - mean).mean(-1, keepdims=True)
    y = (y - mean) * lax.rsqrt(var + GROUP_NORM_EPS)
    y = y.reshape(T, H * N) * p["ln_x"]["weight"].astype(F32) + p["ln_x"]["bias"].astype(F32)
    y = y.astype(x.dtype)
    bonus = (r_h * k_h * p["r_k"].astype(F32)).sum(-1, keepdims=True) * v_h
    y = y + bonus.reshape(T, H * N).astype(x.dtype)
    return (y * g) @ p["output"], wkv_state, v_first, states


def channel_mix(p: Params, x: jax.Array, shift: jax.Array) -> jax.Array:
    """Feed-forward block with token shift and relu^2. x `[T, D]` is the ln2 output."""
    k = x + (_shifted(x, shift) - x) * p["x_k"]
    return jnp.square(jax.nn.relu(k @ p["key"])) @ p["value"]


def split_layers(blocks: Params, n_layer: int) -> tuple[Params, ...]:
    """Stacked `blocks` `{name: [L, ...]}` as a tuple of per-layer dicts; `step(..., unroll_layers=True)`
    accepts params whose `blocks` are split this way (split once, outside a decode loop)."""
    return tuple(jax.tree.map(lambda a: a[i], blocks) for i in range(n_layer))


def decode_params(params: Params, cfg: Config) -> Params:
    """The params as a decode loop wants them, made once before it: `blocks` split per layer (see
    `split_layers`) and the head stored `[V, D]` as `head_vd`; XLA's CPU dot multiplies `[B, D]`
    by that matrix's transpose 2-3x faster than by a `[D, V]` one at V = 65536. `step(...,
    unroll_layers=True)` takes them."""
    rest = {k: v for k, v in params.items() if k != "head"}
    # the barrier keeps the transposed copy from being folded back into the dot
    head_vd = lax.optimization_barrier(params["head"].T)
    return {**rest, "blocks": split_layers(params["blocks"], cfg.n_layer), "head_vd": head_vd}


# Per-layer core rank of each state field: wkv [H, N, N], shifts [D]; the layer axis sits just before.
_CORE_RANK = State(wkv=3, att_shift=1, ffn_shift=1)


def split_state(state: State) -> State:
    """The state with every field a tuple of per-layer arrays (any batch axes kept). `step(...,
    unroll_layers=True)` takes and returns states split this way: a decode loop carrying one never
    slices or restacks the whole state per token (75 MB at batch 32 of a 0.1B model)."""
    return jax.tree.map(lambda x, core: tuple(jnp.moveaxis(x, x.ndim - core - 1, 0)), state, _CORE_RANK)


def join_state(state: State) -> State:
    """The inverse of `split_state`."""
    # _CORE_RANK leads, so each int leaf meets the tuple of per-layer arrays at its place
    return jax.tree.map(lambda core, layers: jnp.stack(layers, axis=layers[0].ndim - core), _CORE_RANK, state)


def _run(params: Params, cfg: Config, tokens: jax.Array, state: State, *, impl: Impl,
         chunk_size: int, length: jax.Array | None, trace: bool, unroll: bool = False):
    """Shared body of `forward` and `forward_trace`: final hidden `[T, D]`, State, extras."""
    x = layer_norm(params["emb"][tokens], params["ln0"])
    valid = None if length is None else jnp.arange(tokens.shape[0]) < length

    def block(carry, layer):
        x, v_first = carry
        p, wkv_s, att_s, ffn_s, index = layer
        h = layer_norm(x, p["ln1"])
        dx, wkv_s, v_first, states = time_mix(
            p["att"], cfg, h, att_s, wkv_s, v_first, index == 0, valid,
            impl=impl, chunk_size=chunk_size, emit_states=trace,
        )
        new_att = _last(h, att_s, length)
        x_mid = x + dx
        f = layer_norm(x_mid, p["ln2"])
        x_out = x_mid + channel_mix(p["ffn"], f, ffn_s)
        new_state = (wkv_s, new_att, _last(f, ffn_s, length))
        extras = (x, states, h.astype(F32), f.astype(F32)) if trace else None
        return (x_out, v_first), (new_state, extras)

    carry = (x, jnp.zeros_like(x))
    if unroll:
        # A Python loop over layers: with `split_layers` params nothing is sliced per call, which
        # inside a decode loop saves copying every layer's weights on every step.
        blocks = params["blocks"]
        if not isinstance(blocks, tuple):
            blocks = split_layers(blocks, cfg.n_layer)
        split = isinstance(state.wkv, tuple)
        layers = state if split else split_state(state)
        states, outs = [], []
        for i in range(cfg.n_layer):
            carry, (new, out) = block(carry, (blocks[i], layers.wkv[i], layers.att_shift[i],
                                               layers.ffn_shift[i], i))
            states.append(new)
            outs.append(out)
        x, extras = carry[0], jax.tree.map(lambda *a: jnp.stack(a), *outs)
        new_state = State(*map(tuple, zip(*states, strict=True)))
        return x, new_state if split else join_state(new_state), extras
    else:
        layers = (params["blocks"], state.wkv, state.att_shift, state.ffn_shift, jnp.arange(cfg.n_layer))
        (x, _), ((wkv_s, att_s, ffn_s), extras) = lax.scan(block, carry, layers)
    return x, State(wkv=wkv_s, att_shift=att_s, ffn_shift=ffn_s), extras


def _check_state(state: State, cfg: Config) -> None:
    """Refuses a state of another model (or a batch of states: `jax.vmap` over them) with a message
    naming the shapes, instead of a shape error deep inside `lax.scan`. Runs while tracing, on static
    shapes: nothing of it is in the compiled code. Takes `split_state` states too."""
    if not isinstance(state, State):
        raise TypeError(f"state must be an rwkv_jax.State, got {type(state).__name__}")
    if isinstance(state.wkv, tuple):
        if not all(isinstance(f, tuple) and len(f) == cfg.n_layer for f in (state.wkv, state.att_shift,
                                                                            state.ffn_shift)):
            raise ValueError(f"a split state must hold {cfg.n_layer} per-layer arrays in every field")
        state = jax.eval_shape(join_state, state)
    state.check(cfg)
    if state.batch_shape:
        raise ValueError(f"state has batch axes {state.batch_shape}; forward, prefill and step read one "
                         "sequence: jax.vmap them over a batch of states")


def _head(params: Params, x: jax.Array) -> jax.Array:
    h = layer_norm(x, params["ln_out"])
    if "head_vd" in params:  # the `decode_params` layout
        return lax.dot_general(h, params["head_vd"], (((h.ndim - 1,), (1,)), ((), ()))).astype(F32)
    return (h @ params["head"]).astype(F32)


@functools.partial(jax.jit, static_argnames=("cfg", "wkv", "logits", "chunk_size"))
def forward(
    params: Params,
    cfg: Config,
    tokens: jax.Array,
    state: State | None = None,
    *,
    wkv: Impl = "chunked",
    logits: Literal["all", "last"] = "all",
    length: jax.Array | int | None = None,
    chunk_size: int = 32,
) -> tuple[jax.Array, State]:
    """Reads `tokens [T]` from `state` (zeros if None); returns logits and the new state.

    logits: `[T, V]` float32, or `[V]` for the last valid token with `logits="last"`.
    length: tokens at positions >= length leave the state untouched (right-padded batches).
    wkv: "chunked" (default, fast prefill and training) or "scan" (per token).
    """
    if state is None:
        state = State.zeros(cfg)
    _check_state(state, cfg)
    x, state, _ = _run(params, cfg, tokens, state, impl=wkv, chunk_size=chunk_size, length=length,
                       trace=False)
    if logits == "last":
        x = x[-1] if length is None else x[jnp.maximum(length - 1, 0)]
    elif logits != "all":
        raise ValueError(f"logits must be 'all' or 'last', got {logits!r}")
    return _head(params, x), state


def prefill(params: Params, cfg: Config, tokens: jax.Array, state: State | None = None,
            length: jax.Array | int | None = None) -> tuple[jax.Array, State]:
    """Reads a prompt and returns the last token's logits `[V]`: what generation starts from."""
    return forward(params, cfg, tokens, state, logits="last", length=length)


@functools.partial(jax.jit, static_argnames=("cfg", "unroll_layers"))
def step(params: Params, cfg: Config, token: jax.Array, state: State, *,
         unroll_layers: bool = False) -> tuple[jax.Array, State]:
    """One decoding step: token `[]` int -> logits `[V]`, new state.

    `unroll_layers` pays off only inside a jitted decode loop, with `decode_params` made once before
    it; it also takes (and then returns) a `split_state` state.
    """
    _check_state(state, cfg)
    x, state, _ = _run(params, cfg, jnp.reshape(token, (1,)), state, impl="scan", chunk_size=1,
                       length=None, trace=False, unroll=unroll_layers)
    return _head(params, x[0]), state


@functools.partial(jax.jit, static_argnames=("cfg",))
def forward_trace(params: Params, cfg: Config, tokens: jax.Array,
                  state: State | None = None) -> tuple[jax.Array, State, Trace]:
    """`forward` (per-token scan) that also returns every layer's input and every token's state."""
    if state is None:
        state = State.zeros(cfg)
    _check_state(state, cfg)
    x, final, (hidden, wkv_states, att, ffn) = _run(
        params, cfg, tokens, state, impl="scan", chunk_size=1, length=None, trace=True
    )
    hidden = jnp.concatenate([hidden, x[None]], axis=0).astype(F32)
    # scan stacks per layer: [L, T, ...] -> per token: [T, L, ...]
    states = State(
        wkv=jnp.moveaxis(wkv_states, 0, 1),
        att_shift=jnp.moveaxis(att, 0, 1),
        ffn_shift=jnp.moveaxis(ffn, 0, 1),
    )
    return _head(params, x), final, Trace(hidden=hidden, states=states)


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
