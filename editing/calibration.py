"""Calibration (paper Algorithm 1): the delta between the states two prompts leave behind.

Both prompts are wrapped the same way and read from the same initial state, so everything they
share cancels in the difference and what remains is the change of the one fact they disagree on.
Many prompts are read in one vmapped forward pass: token arrays are right-padded to a multiple of
`BUCKET` (so nearby lengths share one compiled kernel) and `length` keeps padding out of the state.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from editing import algebra
from editing.algebra import Delta
from editing.select import ALL, Selection
from rwkv_jax.chat import turn
from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State

Template = Literal["chat", "bare"]
TEMPLATES = ("chat", "bare")
BUCKET = 16


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def wrap(text: str, template: Template = "chat") -> str:
    """The calibration text for a prompt. "chat" makes it a finished user turn (`User: ...\\n\\n`),
    the form a fact takes in a chat-formatted live state; "bare" leaves it as is."""
    if template == "chat":
        return turn("user", text)
    if template == "bare":
        return text
    raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")


def encode_padded(tokenizer: Encoder, texts: Sequence[str], vocab_size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Token ids `[K, T]` right-padded with 0 to a multiple of `BUCKET`, and lengths `[K]`."""
    if isinstance(texts, str) or not texts:
        raise ValueError("expected a non-empty sequence of texts")
    ids = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}")
        tokens = tokenizer.encode(text)
        if not tokens:
            raise ValueError(f"{text!r} encodes to no tokens")
        if max(tokens) >= vocab_size:
            raise ValueError(f"{text!r} encodes to token {max(tokens)}, outside the model's "
                             f"vocabulary of {vocab_size}: is this the model's tokenizer?")
        ids.append(tokens)
    lengths = np.array([len(t) for t in ids], np.int32)
    T = -(-int(lengths.max()) // BUCKET) * BUCKET
    tokens = np.zeros((len(ids), T), np.int32)
    for row, t in zip(tokens, ids, strict=True):
        row[: len(t)] = t
    return tokens, lengths


def pad_rows(tree, K: int):
    """Every leaf's leading axis (of size K) padded to a power of two with copies of row 0: a few
    compiled kernels serve every K. Slice the results back to `[:K]`."""
    fill = np.zeros((1 << (K - 1).bit_length()) - K, np.int32)
    return jax.tree.map(lambda x: jnp.concatenate([x, x[fill]]), tree)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _read(params: Params, cfg: Config, tokens: jax.Array, lengths: jax.Array,
          state: State) -> tuple[jax.Array, State]:
    # tokens [K, T], lengths [K], state [K] -> logits [K, V], State [K]. Calibration and
    # correction texts are short: vmapped, the per-token scan reads them faster than the chunked wkv.
    run = lambda t, n, s: forward(params, cfg, t, s, logits="last", length=n, wkv="scan")
    return jax.vmap(run)(tokens, lengths, state)


def read(params: Params, cfg: Config, tokenizer: Encoder, texts: Sequence[str],
         state: State | None = None) -> tuple[jax.Array, State]:
    """Reads each text from `state` (one shared state, or one per text; zeros if None) in one
    vmapped pass. Returns the next-token logits `[K, V]` and the states `[K, ...]`."""
    tokens, lengths = encode_padded(tokenizer, texts, cfg.vocab_size)
    K = len(texts)
    state = State.zeros(cfg) if state is None else state
    state.check(cfg)
    if state.batch_shape == ():
        # One kernel per (K, T) whether the start is shared or not; the K output states need
        # that much memory anyway.
        state = jax.tree.map(lambda x: jnp.broadcast_to(x, (K, *x.shape)), state)
    elif state.batch_shape != (K,):
        raise ValueError(f"state batch shape {state.batch_shape} is neither () nor ({K},) "
                         f"for {K} texts")
    logits, out = _read(params, cfg, *pad_rows((tokens, lengths, state), K))
    return jax.tree.map(lambda x: x[:K], (logits, out))


def calibrate_batch(params: Params, cfg: Config, tokenizer: Encoder,
                    pairs: Sequence[tuple[str, str]], *, template: Template = "chat",
                    init_state: State | None = None) -> Delta:
    """Deltas `[K, ...]` for K `(p_old, p_new)` pairs, all read in one vmapped pass.

    init_state: None (zeros), one state shared by all pairs, or `[K, ...]` one per pair (a pair's
    two prompts always start from the same state).
    """
    if not pairs or any(isinstance(p, str) or len(p) != 2 for p in pairs):
        raise ValueError("pairs must be a non-empty sequence of (p_old, p_new)")
    K = len(pairs)
    texts = [wrap(p[0], template) for p in pairs] + [wrap(p[1], template) for p in pairs]
    if init_state is not None and init_state.batch_shape:
        if init_state.batch_shape != (K,):
            raise ValueError(f"init_state batch shape {init_state.batch_shape} is neither () nor "
                             f"({K},) for {K} pairs")
        init_state = jax.tree.map(lambda x: jnp.concatenate([x, x]), init_state)
    _, states = read(params, cfg, tokenizer, texts, init_state)
    # [2K, ...]: the old prompts, then the new ones
    old = jax.tree.map(lambda x: x[:K], states)
    new = jax.tree.map(lambda x: x[K:], states)
    return algebra.delta(new, old)


def calibrate(params: Params, cfg: Config, tokenizer: Encoder, p_old: str, p_new: str, *,
              template: Template = "chat", init_state: State | None = None) -> Delta:
    """The delta `state(p_new) - state(p_old)`, both prompts wrapped by `template` and read from
    `init_state` (zeros if None; pass the live conversation's prefix state to align them)."""
    if init_state is not None and init_state.batch_shape:
        raise ValueError(f"init_state must be one state, got batch shape {init_state.batch_shape}"
                         "; use calibrate_batch for many")
    batch = calibrate_batch(params, cfg, tokenizer, [(p_old, p_new)], template=template,
                            init_state=init_state)
    return jax.tree.map(lambda x: x[0], batch)


def edit(params: Params, cfg: Config, tokenizer: Encoder, state: State, p_old: str, p_new: str,
         *, template: Template = "chat", init_state: State | None = None,
         alpha: float = 1.0, select: Selection = ALL) -> State:
    """Calibrates on `(p_old, p_new)` and applies the delta to `state`, in one call."""
    d = calibrate(params, cfg, tokenizer, p_old, p_new, template=template, init_state=init_state)
    return algebra.apply(state, d, alpha=alpha, select=select)
