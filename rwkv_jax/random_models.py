"""Small random models for checking mechanics without a checkpoint.

Their outputs mean nothing; they exist so that scripts, examples and tests can exercise every
code path (and exact mechanical properties such as "a full transplant reproduces the source")
in seconds.
"""

from __future__ import annotations

from rwkv_jax.bundle import Model
from rwkv_jax.config import Config
from rwkv_jax.params import perturbed_params
from rwkv_jax.tokenizer import Tokenizer, byte_tokenizer


def random_model(n_layer: int = 2, n_embd: int = 128, *, tokenizer: Tokenizer | None = None,
                 seed: int = 0, noise: float = 0.05) -> Model:
    """`rwkv_jax.params.perturbed_params` with a tokenizer (default the built-in byte vocab);
    head size 64, the vocab as large as the tokenizer's."""
    tokenizer = tokenizer or byte_tokenizer()
    cfg = Config.default(n_layer, n_embd, tokenizer.vocab_size)
    return Model(params=perturbed_params(cfg, seed, noise), cfg=cfg, tokenizer=tokenizer)
