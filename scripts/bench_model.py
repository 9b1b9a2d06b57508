"""Speed of rwkv_jax against the official `rwkv` package on one random 0.1B-shape model.

    python scripts/bench_model.py [--prefill 512] [--decode 64] [--stream-tokens 1000000] [--widths-only]

Both run on this CPU in one process, same weights (written as an official `.pth`), fp32. The
official package is measured at each `--threads` count and the faster result anchors each ratio:
a baseline at its best setting (on two shared cores, two torch threads spin and can lose to one).
Prints a markdown report: prefill, training (forward + backward), decode at batch 1/8/32; prefill
and decode at batch 1 and 32 with float32, bfloat16 and int8 weights (`rwkv_jax.quant`), the bytes
a batch-1 token reads and the share of this CPU's measured read rate; and peak RSS while streaming tokens through
`forward` with a carried state (the constant-memory promise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP spin-waits on shared cores
os.environ["RWKV_V7_ON"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rwkv_jax import Config, State, forward, kernels, quant  # noqa: E402
from rwkv_jax.batch import broadcast  # noqa: E402
from rwkv_jax.batch import read as batch_read  # noqa: E402
from rwkv_jax.generate import generate_tokens  # noqa: E402
from rwkv_jax.model import step  # noqa: E402
from rwkv_jax.params import perturbed_params  # noqa: E402


def median_time(fn, reps: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def bench_official(path: Path, prompt: np.ndarray, n_decode: int, reps: int, threads: list[int]) -> dict:
    """{threads: {"prefill", "decode1"} in tok/s} for each torch thread count."""
    import torch
    from rwkv.model import RWKV

    model = RWKV(model=str(path.with_suffix("")), strategy="cpu fp32")
    toks = [int(t) for t in prompt]
    res = {}
    for n in threads:
        torch.set_num_threads(n)
        prefill = median_time(lambda: model.forward(toks, None), reps)
        out, state = model.forward(toks, None)

        def decode():
            nonlocal out, state
            for _ in range(n_decode):
                out, state = model.forward([int(out.argmax())], state)

        res[n] = {"prefill": len(toks) / prefill, "decode1": n_decode / median_time(decode, reps)}
    return res


def decode_rate(params, cfg: Config, prompt: np.ndarray, state: State, batch: int, n_decode: int, reps: int) -> float:
    """Tokens a second (all rows) of the jitted decode loop at `batch` rows from `state`."""
    no_stop = (jnp.zeros((0, 1, cfg.vocab_size), jnp.int32), jnp.zeros((0,), jnp.int32))
    prompts = jnp.asarray(np.tile(prompt[:16], (batch, 1)))
    lengths = jnp.full((batch,), 16, jnp.int32)
    start = broadcast(state, batch)

    def run():
        out = generate_tokens(
            params, cfg, prompts, lengths, start, jax.random.key(0), *no_stop,
            jnp.ones(cfg.vocab_size), max_new_tokens=n_decode,
        )
        jax.block_until_ready(out)

    # prefill of the 16-token prompt is included; measured separately and subtracted
    read = jax.jit(lambda t, n, s: batch_read(params, cfg, t, n, s))
    t_read = median_time(lambda: jax.block_until_ready(read(prompts, lengths, start)), reps)
    return batch * n_decode / max(median_time(run, reps) - t_read, 1e-9)


def read_bandwidth(reps: int, gib: float = 1.0) -> float:
    """This CPU's memory read rate in GB/s: a jitted sum over `gib` GiB of float32, far past
    every cache, on every core XLA uses."""
    a = jnp.ones((int(gib * 2**28),), jnp.float32)
    total = jax.jit(jnp.sum)
    seconds = median_time(lambda: total(a).block_until_ready(), max(reps, 5))
    return a.nbytes / seconds / 1e9


def decode_bytes(params, cfg: Config) -> int:
    """Bytes one batch-1 decode step reads: every leaf but the embedding, one embedding row, and
    the state read and written."""
    emb = params["emb"]
    others = sum(int(x.nbytes) for x in jax.tree.leaves({**params, "emb": None}, is_leaf=quant.is_narrow)
                 if x is not None)
    state = State.zeros(cfg)
    return others + emb.nbytes // cfg.vocab_size + 2 * sum(int(x.nbytes) for x in jax.tree.leaves(state))


def bench_widths(params, cfg: Config, prompt: np.ndarray, n_decode: int, reps: int) -> dict:
    """{dtype: {"prefill", "decode1", "decode32", "bytes"}} for float32 params and their weight-only
    quantized forms (`rwkv_jax.quant`), interleaved so that load on the machine hits every row alike."""
    forms = {"float32": params, **{d: quant.quantize(params, d) for d in quant.DTYPES}}
    toks = jnp.asarray(prompt)
    _, state = forward(params, cfg, toks)
    measures = ("prefill", "decode1", "decode32")
    res = {d: {"bytes": decode_bytes(p, cfg), **{m: [] for m in measures}} for d, p in forms.items()}
    for _ in range(reps):
        for d, p in forms.items():
            f = jax.jit(lambda p, t: forward(p, cfg, t, logits="last")[0])
            res[d]["prefill"].append(len(prompt) / median_time(lambda: f(p, toks).block_until_ready(), 1))
            res[d]["decode1"].append(decode_rate(p, cfg, prompt, state, 1, n_decode, 1))
            res[d]["decode32"].append(decode_rate(p, cfg, prompt, state, 32, n_decode, 1))
    for r in res.values():
        r.update({m: statistics.median(r[m]) for m in measures})
    return res


def print_widths(widths: dict, official: dict | None, bandwidth: float, prefill: int) -> None:
    """The width table; ratios to the official package where it was measured."""
    print(f"\n## Weight width (0.1B shape; {kernels.status()})\n")
    print(f"Measured memory read rate: {bandwidth:.1f} GB/s (a jitted sum over 1 GiB of float32).\n")
    print(f"| weights | prefill {prefill} (tok/s) | vs official | decode batch 1 (tok/s) | vs official | vs our fp32 "
          "| MB read per token | GB/s | share of read rate | decode batch 32 (tok/s, all rows) | vs official |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = widths["float32"]["decode1"]
    ratio = (lambda v, k: f"{v / official[k]:.2f}x") if official else (lambda v, k: "")
    for d, r in widths.items():
        rate = r["bytes"] * r["decode1"] / 1e9
        print(f"| {d} | {r['prefill']:.1f} | {ratio(r['prefill'], 'prefill')} | {r['decode1']:.1f} | "
              f"{ratio(r['decode1'], 'decode1')} | {r['decode1'] / base:.2f}x | {r['bytes'] / 1e6:.0f} | "
              f"{rate:.1f} | {rate / bandwidth:.0%} | {r['decode32']:.1f} | {ratio(r['decode32'], 'decode1')} |")


def bench_ours(params, cfg: Config, prompt: np.ndarray, n_decode: int, reps: int) -> dict:
    toks = jnp.asarray(prompt)
    res = {}
    for impl in ("chunked", "scan"):
        f = jax.jit(lambda p, t, impl=impl: forward(p, cfg, t, wkv=impl, logits="last")[0])
        res[f"prefill_{impl}"] = len(prompt) / median_time(lambda: f(params, toks).block_until_ready(), reps)

        def loss(p, impl=impl):
            logits, _ = forward(p, cfg, toks[:-1], wkv=impl)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), toks[1:, None], 1).mean()

        g = jax.jit(jax.grad(loss))
        res[f"train_{impl}"] = (len(prompt) - 1) / median_time(
            lambda: jax.block_until_ready(g(params)), max(1, reps // 2)
        )

    _, state = forward(params, cfg, toks)
    logits = jnp.zeros(cfg.vocab_size)

    def host_loop():  # the official package's loop shape: one call and a host sync per token
        nonlocal logits, state
        for _ in range(n_decode):
            logits, state = step(params, cfg, jnp.argmax(logits), state)
            int(jnp.argmax(logits))

    res["decode1_step"] = n_decode / median_time(host_loop, reps)
    for batch in (1, 8, 32):
        res[f"decode{batch}_loop"] = decode_rate(params, cfg, prompt, state, batch, n_decode, reps)
    return res


def stream_memory(total: int, chunk: int) -> list[tuple[int, float, float]]:
    cfg = Config.default(2, 128, 1024)
    params = perturbed_params(cfg, scale=0.02)
    f = jax.jit(lambda p, t, s: forward(p, cfg, t, s, logits="last"))
    state, rng = State.zeros(cfg), np.random.default_rng(0)
    marks, rows, done = {10_000, 100_000, total}, [], 0
    while done < total:
        toks = jnp.asarray(rng.integers(0, cfg.vocab_size, chunk), jnp.int32)
        logits, state = f(params, toks, state)
        logits.block_until_ready()
        done += chunk
        for m in sorted(marks):
            if done >= m:
                rows.append((done, *rss_mib()))
                marks.discard(m)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="torch thread counts to measure the official package at")
    ap.add_argument("--stream-tokens", type=int, default=1_000_000)
    ap.add_argument("--stream-chunk", type=int, default=4096)
    ap.add_argument("--widths-only", action="store_true", help="only the weight-width table (no official package)")
    args = ap.parse_args()
    threads = [int(n) for n in args.threads.split(",")]

    from convert import write_pth

    cfg = Config.default(12, 768, 65536)
    params = perturbed_params(cfg, scale=0.02)
    prompt = np.random.default_rng(0).integers(1, cfg.vocab_size, args.prefill).astype(np.int32)
    if args.widths_only:
        widths = bench_widths(params, cfg, prompt, args.decode, args.reps)
        return print_widths(widths, None, read_bandwidth(args.reps), args.prefill)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pth"
        write_pth(params, path, dtype="float32")
        by_threads = bench_official(path, prompt, args.decode, args.reps, threads)
    ours = bench_ours(params, cfg, prompt, args.decode, args.reps)
    widths = bench_widths(params, cfg, prompt, args.decode, args.reps)
    bandwidth = read_bandwidth(args.reps)
    official = {k: max(r[k] for r in by_threads.values()) for k in ("prefill", "decode1")}

    print(f"## 0.1B shape (L=12, D=768, V=65536, fp32), {jax.devices()[0].device_kind}, jax {jax.__version__}\n")
    print("| official rwkv, torch threads | prefill (tok/s) | decode batch 1 (tok/s) |")
    print("|---|---|---|")
    for n, r in by_threads.items():
        print(f"| {n} | {r['prefill']:.1f} | {r['decode1']:.1f} |")
    print("\nRatios below are against the faster thread count for each measure.\n")
    print("| measure | official rwkv (tok/s) | rwkv_jax (tok/s) | ratio |")
    print("|---|---|---|---|")
    rows = [
        (f"prefill {args.prefill}, chunked wkv", official["prefill"], ours["prefill_chunked"]),
        (f"prefill {args.prefill}, scan wkv", official["prefill"], ours["prefill_scan"]),
        ("decode batch 1, host loop (one call per token)", official["decode1"], ours["decode1_step"]),
        ("decode batch 1, jitted loop", official["decode1"], ours["decode1_loop"]),
        ("decode batch 8, jitted loop (all rows)", official["decode1"], ours["decode8_loop"]),
        ("decode batch 32, jitted loop (all rows)", official["decode1"], ours["decode32_loop"]),
    ]
    for name, ref, val in rows:
        print(f"| {name} | {ref:.1f} | {val:.1f} | {val / ref:.2f}x |")
    for impl in ("chunked", "scan"):
        print(f"| training {args.prefill - 1} tokens fwd+bwd, {impl} wkv | n/a | {ours[f'train_{impl}']:.1f} | |")
    print_widths(widths, official, bandwidth, args.prefill)
    print(f"\n## Streaming {args.stream_tokens} tokens in {args.stream_chunk}-token chunks (L=2, D=128)\n")
    print("| tokens read | RSS (MiB) | peak RSS (MiB) |")
    print("|---|---|---|")
    for n, cur, peak in stream_memory(args.stream_tokens, args.stream_chunk):
        print(f"| {n} | {cur:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
