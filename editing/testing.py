"""Small random models for checking edit mechanics without a checkpoint.

Their outputs mean nothing; they exist so that scripts, examples and tests can exercise every
code path (and exact mechanical properties such as "a full transplant reproduces the source")
in seconds.
"""

from __future__ import annotations

from rwkv_jax.checkpoint import Model
from rwkv_jax.config import Config
from rwkv_jax.params import perturbed_params
from rwkv_jax.tokenizer import Tokenizer


def byte_tokenizer() -> Tokenizer:
    """One token per byte (ids 1..256): every string encodes, and a 257-row vocab suffices."""
    return Tokenizer({i + 1: bytes([i]) for i in range(256)}, name="bytes")


def random_model(n_layer: int = 2, n_embd: int = 128, *, tokenizer: Tokenizer | None = None,
                 seed: int = 0, noise: float = 0.05) -> Model:
    """`rwkv_jax.params.perturbed_params` with a tokenizer; head size 64."""
    tokenizer = tokenizer or byte_tokenizer()
    cfg = Config.default(n_layer, n_embd, tokenizer.vocab_size)
    return Model(params=perturbed_params(cfg, seed, noise), cfg=cfg, tokenizer=tokenizer)
