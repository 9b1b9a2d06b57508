"""Small random models for checking edit mechanics without a checkpoint.

Their outputs mean nothing; they exist so that scripts, examples and tests can exercise every
code path (and exact mechanical properties such as "a full transplant reproduces the source")
in seconds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rwkv_jax.checkpoint import Model
from rwkv_jax.config import Config
from rwkv_jax.params import init_params
from rwkv_jax.tokenizer import Tokenizer


def byte_tokenizer() -> Tokenizer:
    """One token per byte (ids 1..256): every string encodes, and a 257-row vocab suffices."""
    return Tokenizer({i + 1: bytes([i]) for i in range(256)}, name="bytes")


def random_model(n_layer: int = 2, n_embd: int = 128, *, tokenizer: Tokenizer | None = None,
                 seed: int = 0, noise: float = 0.05) -> Model:
    """The official initialisation plus Gaussian noise on every leaf; head size 64.

    The initialisation zeroes each block's output projections, which would leave the logits
    independent of the state; the noise makes the state matter.
    """
    tokenizer = tokenizer or byte_tokenizer()
    cfg = Config.default(n_layer, n_embd, tokenizer.vocab_size)
    rng = np.random.default_rng(seed)  # numpy noise: no per-shape compilation
    params = jax.tree.map(
        lambda x: jnp.asarray(np.asarray(x) + noise * rng.standard_normal(x.shape, np.float32)),
        init_params(cfg, jax.random.key(seed)),
    )
    return Model(params=params, cfg=cfg, tokenizer=tokenizer)
