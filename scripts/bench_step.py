"""Two small speed probes on the 0.1B shape, for side-by-side runs of two trees: decode with one
jitted `step` call and host sync per token, and a 63-token fwd+bwd with the scan wkv.

    PYTHONPATH=TREE python scripts/bench_step.py

Prints one line: the median tok/s of 5 host loops of 32 tokens, and of 3 fwd+bwd passes.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkv_jax import Config, forward
from rwkv_jax.model import step
from rwkv_jax.params import perturbed_params


def main() -> None:
    cfg = Config.default(12, 768, 65536)
    params = perturbed_params(cfg, scale=0.02)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, cfg.vocab_size, 64), jnp.int32)
    _, state = forward(params, cfg, tokens)
    logits = jnp.zeros(cfg.vocab_size)

    def loop(n: int = 32) -> float:
        nonlocal logits, state
        start = time.perf_counter()
        for _ in range(n):
            logits, state = step(params, cfg, jnp.argmax(logits), state)
            int(jnp.argmax(logits))
        return n / (time.perf_counter() - start)

    loop(2)
    decode = statistics.median(loop() for _ in range(5))
    grad = jax.jit(jax.grad(lambda p: forward(p, cfg, tokens[:-1], wkv="scan")[0].mean()))
    jax.block_until_ready(grad(params))

    def train() -> float:
        start = time.perf_counter()
        jax.block_until_ready(grad(params))
        return (len(tokens) - 1) / (time.perf_counter() - start)

    print(f"host-loop step {decode:.1f} tok/s, scan fwd+bwd {statistics.median(train() for _ in range(3)):.1f} tok/s")


if __name__ == "__main__":
    main()
