"""Log-likelihoods of continuations, the quantity every lm-eval loglikelihood task asks for.

A recurrent model has no context window, so a context and its continuation are read as one
sequence in one pass; the continuation's tokens are scored by the logits that precede them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rwkv_jax.config import Config
from rwkv_jax.model import forward
from rwkv_jax.params import Params
from rwkv_jax.state import State


@functools.partial(jax.jit, static_argnames=("cfg",))
def continuation_logprobs(params: Params, cfg: Config, tokens: jax.Array, lengths: jax.Array,
                          starts: jax.Array, state: State) -> tuple[jax.Array, jax.Array]:
    """Summed log-probability of each row's tokens `[start, length)` and whether greedy decoding
    would have produced all of them.

    tokens `[B, T]` right-padded, lengths `[B]`, starts `[B]` (1 <= start < length: the first
    scored token has at least one token before it), state `[B]`. Returns `([B] float32, [B] bool)`.
    """

    def one(t, n, start, s):
        logits, _ = forward(params, cfg, t, s, logits="all", length=n)  # [T, V]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        target = jnp.roll(t, -1)  # position p predicts token p + 1
        positions = jnp.arange(t.shape[0])
        scored = (positions >= start - 1) & (positions < n - 1)
        token_logp = jnp.take_along_axis(logp, target[:, None], axis=1)[:, 0]
        greedy = jnp.argmax(logp, axis=-1) == target
        return jnp.sum(jnp.where(scored, token_logp, 0.0)), jnp.all(greedy | ~scored)

    return jax.vmap(one)(tokens, lengths, starts, state)
