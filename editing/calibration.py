"""Calibration (paper Algorithm 1): the delta between the states two prompts leave behind.

Both prompts are wrapped the same way and read from the same initial state, so everything they
share cancels in the difference and what remains is the change of the one fact they disagree on.
Many prompts are read in one vmapped forward pass (`rwkv_jax.batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from jaxtyping import Array, Float

from editing import algebra
from editing.algebra import Delta
from editing.select import ALL, Selection
from rwkv_jax.batch import Encoder, Reader, broadcast, concat, take
from rwkv_jax.chat import turn
from rwkv_jax.config import Config
from rwkv_jax.params import Params
from rwkv_jax.state import State

Template = Literal["chat", "bare"]
TEMPLATES = ("chat", "bare")


def wrap(text: str, template: Template = "chat") -> str:
    """The calibration text for a prompt. "chat" makes it a finished user turn (`User: ...\\n\\n`),
    the form a fact takes in a chat-formatted live state; "bare" leaves it as is."""
    if template == "chat":
        return turn("user", text)
    if template == "bare":
        return text
    raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")


def read(params: Params, cfg: Config, tokenizer: Encoder, texts: Sequence[str],
         state: State | None = None) -> tuple[Float[Array, "K V"], State]:
    """Reads each text from `state` (one shared state, or one per text; zeros if None) in one
    vmapped pass. Returns the next-token logits and the states `[K, ...]`."""
    return Reader(params, cfg).read_texts(tokenizer, texts, state)


def calibrate_with(reader: Reader, tokenizer: Encoder, pairs: Sequence[tuple[str, str]], *,
                   template: Template = "chat", init_state: State | None = None) -> Delta:
    """`calibrate_batch` read by `reader`: an evaluator's, so calibration runs on its devices."""
    if not pairs or any(isinstance(p, str) or len(p) != 2 for p in pairs):
        raise ValueError("pairs must be a non-empty sequence of (p_old, p_new)")
    K = len(pairs)
    texts = [wrap(p[0], template) for p in pairs] + [wrap(p[1], template) for p in pairs]
    start = State.zeros(reader.cfg) if init_state is None else init_state
    start = broadcast(start, K)
    _, states = reader.read_texts(tokenizer, texts, concat([start, start]))
    # [2K, ...]: the old prompts, then the new ones
    return algebra.delta(take(states, np.arange(K, 2 * K)), take(states, np.arange(K)))


def calibrate_batch(params: Params, cfg: Config, tokenizer: Encoder,
                    pairs: Sequence[tuple[str, str]], *, template: Template = "chat",
                    init_state: State | None = None) -> Delta:
    """Deltas `[K, ...]` for K `(p_old, p_new)` pairs, all read in one vmapped pass.

    init_state: None (zeros), one state shared by all pairs, or `[K, ...]` one per pair (a pair's
    two prompts always start from the same state).
    """
    return calibrate_with(Reader(params, cfg), tokenizer, pairs, template=template, init_state=init_state)


def calibrate(params: Params, cfg: Config, tokenizer: Encoder, p_old: str, p_new: str, *,
              template: Template = "chat", init_state: State | None = None) -> Delta:
    """The delta `state(p_new) - state(p_old)`, both prompts wrapped by `template` and read from
    `init_state` (zeros if None; pass the live conversation's prefix state to align them)."""
    if init_state is not None and init_state.batch_shape:
        raise ValueError(f"init_state must be one state, got batch shape {init_state.batch_shape}"
                         "; use calibrate_batch for many")
    batch = calibrate_batch(params, cfg, tokenizer, [(p_old, p_new)], template=template,
                            init_state=init_state)
    return take(batch, 0)


def edit(params: Params, cfg: Config, tokenizer: Encoder, state: State, p_old: str, p_new: str,
         *, template: Template = "chat", init_state: State | None = None,
         alpha: float = 1.0, select: Selection = ALL) -> State:
    """Calibrates on `(p_old, p_new)` and applies the delta to `state`, in one call."""
    d = calibrate(params, cfg, tokenizer, p_old, p_new, template=template, init_state=init_state)
    return algebra.apply(state, d, alpha=alpha, select=select)
