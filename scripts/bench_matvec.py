"""One `[N, D] x [D, F]` product per weight dtype and formulation: why narrow weights need their own kernel.

    python scripts/bench_matvec.py [--shape 768x3072 --shape 768x65536] [--rows 1] [--reps 30]

Batch-1 decode is a chain of such products at N = 1, each reading its weights once; prefill and
batched decode are the same products at many rows (`--rows 512`, `--rows 32`), bound by compute. For float32, bfloat16,
float16 and int8 weights this times the formulations XLA's CPU backend offers (a widening convert
before the dot, a dot with `preferred_element_type`, an int8 x int8 -> int32 dot, a multiply and
reduce) and the native product of `rwkv_jax.kernels` on the same weights, and prints each as
milliseconds, GB/s of weight bytes read and GFLOP/s. `--xla-flags` reruns the XLA rows in a subprocess
under each flag set (the XNNPACK, YNNPACK and oneDNN fusions this jaxlib carries).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rwkv_jax import kernels, quant

FLAG_SETS = (
    "--xla_cpu_experimental_xnn_fusion_type=dot",
    "--xla_cpu_experimental_ynn_fusion_type=dot",
    "--xla_cpu_experimental_onednn_fusion_type=dot",
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
)
F32 = jnp.float32


def seconds(fn, args, reps: int) -> float:
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def formulations(n: int, d: int, f: int) -> list[tuple[str, object, tuple]]:
    """(name, function, arguments); the weights are the arguments whose bytes count."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, d)), F32)
    w = rng.standard_normal((d, f)).astype(np.float32)
    w32, w16, wbf = jnp.asarray(w), jnp.asarray(w, jnp.float16), jnp.asarray(w, jnp.bfloat16)
    q, b = (quant.quantize({"w": w}, dtype)["w"] for dtype in ("int8", "bfloat16"))
    q_df = jnp.swapaxes(q.rows, 0, 1)  # [D, F] int8
    dot = lambda a, m, t: jax.lax.dot(a.astype(t), m, preferred_element_type=F32)
    rows = [
        ("float32: x @ w", lambda x, w: x @ w, (x, w32)),
        ("bfloat16: x @ w.astype(f32)", lambda x, w: x @ w.astype(F32), (x, wbf)),
        ("bfloat16: bf16 dot, f32 accumulate", lambda x, w: dot(x, w, jnp.bfloat16), (x, wbf)),
        ("float16: f16 dot, f32 accumulate", lambda x, w: dot(x, w, jnp.float16), (x, w16)),
        ("int8: x @ q.astype(f32) * scale", lambda x, w, s: (x @ w.astype(F32)) * s, (x, q_df, q.scale)),
        ("int8: int8 x int8 -> int32 dot", lambda x, w, s: jax.lax.dot(
            jnp.round(x * 16).astype(jnp.int8), w, preferred_element_type=jnp.int32).astype(F32) * s,
         (x, q_df, q.scale)),
    ]
    if n == 1:  # a single row's formulation
        rows.append(("bfloat16: multiply and reduce", lambda x, w: jnp.sum(x[0][:, None] * w.astype(F32), 0), (x, wbf)))
    if kernels.available():
        rows += [("bfloat16: native product (rwkv_jax.kernels)", quant.native_product, (x, b.rows, b.scale)),
                 ("int8: native product (rwkv_jax.kernels)", quant.native_product, (x, q.rows, q.scale))]
    return rows


SLOW = "multiply and reduce"  # seconds per call at V = 65,536: timed once, without the flags


def run(shapes: list[tuple[int, int]], n: int, reps: int, native: bool) -> list[tuple]:
    out = []
    for d, f in shapes:
        for name, fn, args in formulations(n, d, f):
            if ("native" in name or SLOW in name) and not native:
                continue
            t = seconds(fn, args, reps)
            out.append((f"{n}x{d}x{f}", name, t, sum(a.nbytes for a in args[1:]) / t / 1e9, 2 * n * d * f / t / 1e9))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", action="append", help="DxF (default: 768x3072 and 768x65536)")
    ap.add_argument("--rows", type=int, default=1, help="N, rows of activations")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--xla-flags", action="store_true", help="also time the XLA rows under each flag set")
    ap.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)  # the subprocess form
    args = ap.parse_args()
    shapes = [tuple(map(int, s.split("x"))) for s in (args.shape or ["768x3072", "768x65536"])]
    results = run(shapes, args.rows, args.reps, native=not args.rows_only)
    if args.rows_only:
        for shape, name, t, rate, flops in results:
            print(f"{shape}\t{name}\t{t}\t{rate}\t{flops}")
        return
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; native products: {kernels.status()}\n")
    print("| NxDxF | formulation | XLA_FLAGS | ms | GB/s of weights | GFLOP/s |\n|---|---|---|---|---|---|")
    for shape, name, t, rate, flops in results:
        print(f"| {shape} | {name} | | {1e3 * t:.3f} | {rate:.1f} | {flops:.0f} |")
    for flags in FLAG_SETS if args.xla_flags else ():
        cmd = [sys.executable, __file__, "--rows-only", "--reps", str(args.reps), "--rows", str(args.rows),
               *(a for s in shapes for a in ("--shape", f"{s[0]}x{s[1]}"))]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": flags}, check=True)
        for line in res.stdout.splitlines():
            shape, name, t, rate, flops = line.split("\t")
            print(f"| {shape} | {name} | `{flags.removeprefix('--xla_cpu_experimental_')}` | "
                  f"{1e3 * float(t):.3f} | {float(rate):.1f} | {float(flops):.0f} |")


if __name__ == "__main__":
    main()
