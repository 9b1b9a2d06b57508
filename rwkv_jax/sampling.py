"""Next-token choice with the official RWKV sampler semantics and repetition penalties.

Official order: softmax -> keep probs >= the top-p cutoff -> keep the top-k -> probs ** (1 / T)
-> renormalise -> sample. Penalties are subtracted from the logits first:
`logit[n] -= presence * seen[n] + frequency * count[n]`, and counts decay every step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from rwkv_jax.tokenizer import Tokenizer

# The official pipeline does not count these tokens towards the frequency penalty.
UNCOUNTED_TEXT = " \t0123456789"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampler settings; hashable, so a jitted loop specialises on them.

    `temperature=0` (or `top_p=0`) is greedy decoding. `ban` lists token ids never produced
    (token 0, end-of-document, by default, as in the official chat loop).
    """

    temperature: float = 1.0
    top_p: float = 0.85
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    ban: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 <= self.top_p <= 1 or self.top_k < 0:
            raise ValueError(f"invalid sampling settings {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_p == 0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0


GREEDY = Sampling(temperature=0.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Penalty:
    """Per-sequence repetition memory: which tokens were seen, and their decayed counts."""

    seen: Bool[Array, " V"]
    count: Float[Array, " V"]

    @classmethod
    def zeros(cls, vocab_size: int) -> Penalty:
        return cls(seen=jnp.zeros(vocab_size, bool), count=jnp.zeros(vocab_size, jnp.float32))


def count_weights(tokenizer: Tokenizer, vocab_size: int) -> Float[np.ndarray, " V"]:
    """The weight each token adds to its count: 0 for single spaces, tabs and digits."""
    w = np.ones(vocab_size, np.float32)
    for idx, token in tokenizer.id_to_bytes.items():
        if idx < vocab_size and token.decode("utf-8", "replace") in UNCOUNTED_TEXT:
            w[idx] = 0.0
    return w


def adjust_logits(logits: Float[Array, " V"], s: Sampling, penalty: Penalty) -> Float[Array, " V"]:
    """Bans and penalties applied to logits."""
    if s.ban:
        logits = logits.at[jnp.array(s.ban)].set(-jnp.inf)
    if s.penalised:
        seen = penalty.seen.astype(logits.dtype)
        logits = logits - s.presence_penalty * seen - s.frequency_penalty * penalty.count
    return logits


def choose(logits: Float[Array, " V"], s: Sampling, key: PRNGKeyArray) -> Int[Array, ""]:
    """Token id from adjusted logits."""
    if s.greedy:
        return jnp.argmax(logits).astype(jnp.int32)
    probs = jax.nn.softmax(logits)
    sorted_probs = jnp.sort(probs)[::-1]
    cutoff = sorted_probs[jnp.argmax(jnp.cumsum(sorted_probs) >= s.top_p)]
    probs = jnp.where(probs < cutoff, 0.0, probs)
    if 0 < s.top_k < probs.shape[0]:
        probs = jnp.where(probs < sorted_probs[s.top_k - 1], 0.0, probs)
    if s.temperature != 1.0:
        probs = probs ** (1.0 / s.temperature)
    return jax.random.categorical(key, jnp.log(probs)).astype(jnp.int32)


def remember(penalty: Penalty, token: Int[Array, ""], s: Sampling, weights: Float[Array, " V"]) -> Penalty:
    count = penalty.count * s.penalty_decay
    return Penalty(seen=penalty.seen.at[token].set(True), count=count.at[token].add(weights[token]))
