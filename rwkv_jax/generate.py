"""Batched generation: exact prefill of ragged prompts, then a jitted decode loop.

Prompts of different lengths are right-padded and read with `length`, so no sequence's state
ever sees a pad token. Decoding runs inside one `lax.while_loop` over a vmapped `step`; a finished
sequence's state is frozen, so every row equals a one-by-one run.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from rwkv_jax import batch
from rwkv_jax.bundle import Model
from rwkv_jax.chat import STOP
from rwkv_jax.config import Config
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.params import Params
from rwkv_jax.sampling import (
    GREEDY,
    Penalty,
    Sampling,
    adjust_logits,
    choose,
    count_weights,
    remember,
)
from rwkv_jax.state import State, join_state, split_state
from rwkv_jax.stops import cut_at_stop, stop_tables
from rwkv_jax.tokenizer import Tokenizer

PROMPT_BUCKET = 32  # prompt lengths are padded up to a multiple of this, to bound recompiles


@dataclasses.dataclass(frozen=True)
class Generation:
    """Outputs per prompt: generated ids (stop string included), text (cut before the stop
    string; None for a model without a tokenizer), whether a stop string ended it, and the state
    after the last generated token (a `State` with batch shape `[B]`)."""

    tokens: list[list[int]]
    texts: list[str] | None
    stopped: list[bool]
    state: State


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "sampling"))
def generate_tokens(
    params: Params,
    cfg: Config,
    prompts: Int[Array, "B T"],
    lengths: Int[Array, " B"],
    state: State,
    key: PRNGKeyArray,
    stop_table: Int[Array, "S Q V"],
    stop_match: Int[Array, " S"],
    count_weight: Float[Array, " V"],
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
) -> tuple[Int[Array, "B max_new_tokens"], Int[Array, " B"], Bool[Array, " B"], State]:
    """The pure core of `generate`: reads the prompts, then `decode_tokens`.

    prompts right-padded, lengths >= 1, state `[B]` or one state for every prompt; stop_table and
    stop_match from `rwkv_jax.stops.stop_tables` (Q: a stop's match states, its longest pattern
    + 1). Returns tokens (0 after the end), counts, stopped and the final states `[B]`.
    """
    logits, state = batch.read(params, cfg, prompts, lengths, state, wkv="chunked")
    return decode_tokens(params, cfg, logits, state, key, stop_table, stop_match, count_weight,
                         max_new_tokens=max_new_tokens, sampling=sampling)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "sampling"))
def decode_tokens(
    params: Params,
    cfg: Config,
    logits: Float[Array, "B V"],
    state: State,
    key: PRNGKeyArray,
    stop_table: Int[Array, "S Q V"],
    stop_match: Int[Array, " S"],
    count_weight: Float[Array, " V"],
    *,
    max_new_tokens: int,
    sampling: Sampling = GREEDY,
) -> tuple[Int[Array, "B max_new_tokens"], Int[Array, " B"], Bool[Array, " B"], State]:
    """The decode loop alone, from the next-token logits and states `[B]` a prompt left:
    for callers that read their prompts their own way. Returns what `generate_tokens` returns."""
    B = logits.shape[0]
    n_stops = stop_table.shape[0]
    layout = decode_params(params, cfg)
    advance = jax.vmap(lambda t, s: decode_step(layout, cfg, t, s))
    state = split_state(state)

    def cond(carry):
        i, done = carry[0], carry[3]
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, logits, state, done, out, count, stop_q, penalty, key = carry
        key, sub = jax.random.split(key)
        keys = jax.random.split(sub, B)
        adjusted = jax.vmap(lambda lg, p: adjust_logits(lg, sampling, p))(logits, penalty)
        token = jax.vmap(lambda lg, k: choose(lg, sampling, k))(adjusted, keys)
        token = jnp.where(done, 0, token)
        out = out.at[:, i].set(token)
        count = count + (~done).astype(jnp.int32)
        if sampling.penalised:
            penalty = jax.vmap(lambda p, t: remember(p, t, sampling, count_weight))(penalty, token)
        stop_q = stop_table[jnp.arange(n_stops)[None, :], stop_q, token[:, None]]  # [B, S]
        new_logits, new_state = advance(token, state)
        keep = lambda new, old: jnp.where(done.reshape((B,) + (1,) * (new.ndim - 1)), old, new)
        state = jax.tree.map(keep, new_state, state)
        logits = keep(new_logits, logits)
        done = done | jnp.any(stop_q == stop_match[None, :], axis=1)
        return i + 1, logits, state, done, out, count, stop_q, penalty, key

    penalty = jax.vmap(lambda _: Penalty.zeros(cfg.vocab_size))(jnp.arange(B))
    carry = (
        jnp.int32(0), logits, state, jnp.zeros(B, bool),
        jnp.zeros((B, max_new_tokens), jnp.int32), jnp.zeros(B, jnp.int32),
        jnp.zeros((B, n_stops), jnp.int32), penalty, key,
    )
    _, _, state, _, out, count, stop_q, _, _ = jax.lax.while_loop(cond, body, carry)
    stopped = jnp.any(stop_q == stop_match[None, :], axis=1)
    return out, count, stopped, join_state(state)


@functools.lru_cache(maxsize=8)
def _tables(tokenizer: Tokenizer | None, stops: tuple[str, ...], vocab_size: int):
    """Stop tables and count weights; without a tokenizer (and so without stops) every token counts."""
    table, match = stop_tables(tokenizer, stops, vocab_size)
    weights = np.ones(vocab_size, np.float32) if tokenizer is None else count_weights(tokenizer, vocab_size)
    return jnp.asarray(table), jnp.asarray(match), jnp.asarray(weights)


def generate(
    model: Model,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 256,
    sampling: Sampling = GREEDY,
    key: PRNGKeyArray | None = None,
    state: State | None = None,
    stop: tuple[str, ...] | None = None,
) -> Generation:
    """Continues each prompt (text, or token ids) from `state` until a stop string or the budget.

    `state` is None (zeros), one state shared by every prompt, or a batch of `len(prompts)` states.
    Sampling needs an explicit PRNG `key`; greedy decoding ignores it. `stop` defaults to
    "\\n\\n", or to no stop string for a model without a tokenizer (which takes token-id prompts
    only, and whose `texts` are None).
    """
    if not prompts:
        raise ValueError("no prompts to generate from")
    if not sampling.greedy and key is None:
        raise ValueError("sampling needs an explicit PRNG key (or use greedy sampling)")
    tok = model.tokenizer
    stop = ((STOP,) if tok is not None else ()) if stop is None else tuple(stop)
    if stop or any(isinstance(p, str) for p in prompts):
        tok = model.text_tokenizer("generate with text prompts or stop strings")
    ids = [tok.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    padded, lengths = batch.pad(ids, PROMPT_BUCKET)
    table, match, weights = _tables(tok, stop, model.cfg.vocab_size)
    out, count, stopped, final = generate_tokens(
        model.params, model.cfg, jnp.asarray(padded), jnp.asarray(lengths),
        State.zeros(model.cfg) if state is None else state,
        key if key is not None else jax.random.key(0), table, match, weights,
        max_new_tokens=max_new_tokens, sampling=sampling,
    )
    out, count, stopped = np.asarray(out), np.asarray(count), np.asarray(stopped)
    tokens = [row[:n].tolist() for row, n in zip(out, count)]
    texts = None if tok is None else [cut_at_stop(tok.decode(t), stop)[0] for t in tokens]
    return Generation(tokens=tokens, texts=texts, stopped=stopped.tolist(), state=final)
