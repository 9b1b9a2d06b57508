"""Where a batch-1 decode step goes, per weight width, on the 0.1B shape.

    python scripts/bench_decode_step.py [--tokens 32] [--reps 9]

For float32, bfloat16 and int8 weights (`rwkv_jax.quant`) it times, in one process and
alternated with a read of 0.5 GiB (this CPU's read rate, measured between the timings):
- the whole step (`decode_step` in a jitted loop, argmax fed back);
- its large products alone, in the step's order (the projections of every layer, then the head);
- the step with those products replaced by stand-ins of the same shapes that read one weight: the
  rest of it (norms, token shift, LoRAs, the wkv update), each a small XLA op.
It also counts the XLA ops of one compiled step (fusions, XLA dots, native products). Prints a
markdown table: milliseconds a token (medians), the bytes a token reads and the share of the read
rate each part reaches.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time
from unittest import mock

import jax
import jax.numpy as jnp
from bench_model import decode_bytes, read_bandwidth

import rwkv_jax.model
from rwkv_jax import Config, State, kernels, quant
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.params import perturbed_params
from rwkv_jax.state import split_state

F32 = jnp.float32


def _stand_in(x, rows, scale):
    """A native product's shape at almost no cost: x's first entry, broadcast."""
    return jnp.broadcast_to(x[..., :1].astype(F32), x.shape[:-1] + rows.shape[-2:-1]) * scale[0]


def _linear_stand_in(x, w):
    """`linear` with a stand-in for every large float matrix (the narrow ones reach `_stand_in`)."""
    if not quant.quantizable(w):
        return quant.linear(x, w)
    return jnp.broadcast_to(x[..., :1] * w[0, 0], x.shape[:-1] + w.shape[-1:])


def _is_large(w) -> bool:
    """A matrix `quantize` narrows (or has): what the step reads through a product of its own."""
    return quant.is_narrow(w) or quant.quantizable(w)


def step_loop(cfg: Config, n: int):
    @jax.jit
    def run(layout, state):
        def body(_, carry):
            token, state = carry
            logits, state = decode_step(layout, cfg, token, state)
            return jnp.argmax(logits).astype(jnp.int32), state

        return jax.lax.fori_loop(0, n, body, (jnp.int32(1), state))

    return run


def products_loop(n: int):
    """The step's large products alone, each fed from the last (so none is skipped)."""
    @jax.jit
    def run(layout, x):
        def body(_, x):
            for block in layout.blocks:
                for w in jax.tree.leaves(block, is_leaf=quant.is_narrow):
                    if _is_large(w):
                        d = w.shape[0]
                        y = quant.linear(jnp.resize(x, (1, d)), w)
                        x = x + 1e-3 * y[..., :1]
            return x + 1e-3 * quant.rows_product(x, layout.head_vd)[..., :1]

        return jax.lax.fori_loop(0, n, body, x)

    return run


def product_bytes(layout) -> int:
    """Bytes the large products read a token: every layer's projections and the head."""
    large = [w for block in layout.blocks for w in jax.tree.leaves(block, is_leaf=quant.is_narrow) if _is_large(w)]
    return sum(int(w.nbytes) for w in [*large, layout.head_vd])


def op_counts(layout, cfg: Config, state) -> dict[str, int]:
    """XLA ops of one compiled step, by kind."""
    text = jax.jit(lambda p, s: decode_step(p, cfg, jnp.int32(1), s)).lower(layout, state).compile().as_text()
    entry = text[text.index("ENTRY"):]
    kinds = collections.Counter(re.findall(r"= \S+ (fusion|dot|custom-call)\(", entry))
    return {"fusions": kinds["fusion"], "XLA dots": kinds["dot"], "native products": kinds["custom-call"]}


def seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    cfg = Config.default(12, 768, 65536)
    base = perturbed_params(cfg, scale=0.02)
    state = split_state(State.zeros(cfg))
    x = jnp.ones((1, cfg.n_embd), F32)
    print(f"native products: {kernels.status()}; jax {jax.__version__}\n")
    print("| weights | MB a token (products) | whole step (ms) | large products alone (ms) | the rest (ms) "
          "| read rate (GB/s) | step: share of read rate | products alone: share | XLA ops a step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dtype in ("float32", *quant.DTYPES):
        params = base if dtype == "float32" else quant.quantize(base, dtype)
        layout = jax.jit(lambda p: decode_params(p, cfg))(params)
        whole, alone = step_loop(cfg, args.tokens), products_loop(args.tokens)
        with (mock.patch.object(quant, "_product", _stand_in),
              mock.patch.object(rwkv_jax.model, "linear", _linear_stand_in)):
            jax.clear_caches()
            rest = step_loop(cfg, args.tokens)
            rest_t = [seconds(lambda: rest(layout, state)) for _ in range(args.reps + 1)][1:]
        jax.clear_caches()
        times = {"whole": [], "alone": []}
        rates = []
        seconds(lambda: whole(layout, state))  # compiles both
        seconds(lambda: alone(layout, x))
        for _ in range(args.reps):
            rates.append(read_bandwidth(1, gib=0.5))
            times["whole"].append(seconds(lambda: whole(layout, state)))
            times["alone"].append(seconds(lambda: alone(layout, x)))
        ms = {k: 1e3 * statistics.median(v) / args.tokens for k, v in {**times, "rest": rest_t}.items()}
        nbytes, rate = decode_bytes(params, cfg), statistics.median(rates)
        products = product_bytes(layout)
        ops = ", ".join(f"{v} {k}" for k, v in op_counts(layout, cfg, state).items())
        print(f"| {dtype} | {nbytes / 1e6:.0f} ({products / 1e6:.0f}) | {ms['whole']:.2f} | {ms['alone']:.2f} "
              f"| {ms['rest']:.2f} | {rate:.1f} | {nbytes / ms['whole'] / 1e6 / rate:.0%} "
              f"| {products / ms['alone'] / 1e6 / rate:.0%} | {ops} |")


if __name__ == "__main__":
    main()
