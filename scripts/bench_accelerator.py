"""Prefill, decode and RIME throughput on whatever `jax.devices()` holds, each next to its roofline.

    python scripts/bench_accelerator.py                      # accelerator: the 1.5B shape, bf16
    python scripts/bench_accelerator.py --small              # any machine (CI on CPU): L2 D256, fp32
    python scripts/bench_accelerator.py --write BENCHMARKS.md   # also (re)writes its section there

Prefill (chunked and scan wkv) and decode (batch 1, 32, 256: a jitted loop of `decode_step`) run on
the first device with random params of the shape; a RIME mini-run (random model, bundled test
cases) runs on every device (rows split over a data-axis mesh). Each is compiled, then timed.

Rooflines: prefill is bound by peak FLOP/s (2 FLOPs per weight per token); a decode step must at
least read every weight once and each row's state twice (in and out), at HBM bandwidth, and do 2
FLOPs per weight per row: its bound is the larger of the two times. Peak numbers are per chip, from
the vendors' datasheets (`PEAKS`); a device kind not listed gets no roofline.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import rime
import rwkv_jax
from rime.eval import protocol
from rime.eval.evaluate import Evaluator
from rime.eval.protocol import Spec
from rwkv_jax import Config
from rwkv_jax.bundle import Model
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.model import count_params
from rwkv_jax.params import perturbed_params
from rwkv_jax.state import State, split_state
from rwkv_jax.tokenizer import subset_vocab, world_tokenizer

# device kind (substring of jax.Device.device_kind) -> (HBM GB/s, dense bf16 TFLOP/s, source)
PEAKS = {
    "H200": (4800, 989, "NVIDIA H200 datasheet (SXM)"),
    "H100": (3350, 989, "NVIDIA H100 datasheet (SXM)"),
    "A100": (2039, 312, "NVIDIA A100 datasheet (80GB SXM)"),
    "L4": (300, 121, "NVIDIA L4 datasheet"),
    "TPU v4": (1228, 275, "Google Cloud TPU v4 docs"),
    "TPU v5 lite": (819, 197, "Google Cloud TPU v5e docs"),
    "TPU v5p": (2765, 459, "Google Cloud TPU v5p docs"),
    "TPU v6 lite": (1640, 918, "Google Cloud TPU v6e (Trillium) docs"),
}
SECTION = "## Accelerator benchmark (`scripts/bench_accelerator.py`)"


def peaks(device: jax.Device, given: str | None = None) -> tuple[float, float, str] | None:
    """(bytes/s, FLOP/s, source) of the device (`given` "GBS,TFLOPS" overrides `PEAKS`), or None
    for a kind not in `PEAKS` (whole words: an L40S is not an L4)."""
    if given:
        gbs, tflops = map(float, given.split(","))
        return gbs * 1e9, tflops * 1e12, "--peaks"
    for kind, (gbs, tflops, source) in PEAKS.items():
        if re.search(rf"\b{re.escape(kind)}\b", device.device_kind, re.I):
            return gbs * 1e9, tflops * 1e12, source
    return None


def timed(f, *args, repeats: int = 3) -> float:
    """Best wall seconds of `f(*args)` after one compiling call."""
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - start)
    return best


@functools.partial(jax.jit, static_argnames=("cfg", "wkv"))
def prefill(params, cfg: Config, tokens, *, wkv: str):
    # tokens [B, T] -> the last logits [B, V] and states [B]
    return jax.vmap(lambda t: rwkv_jax.forward(params, cfg, t, logits="last", wkv=wkv))(tokens)


@functools.partial(jax.jit, static_argnames=("cfg", "steps"))
def decode(params, cfg: Config, token, state, *, steps: int):
    # token [B], state a batched SplitState: `steps` greedy tokens, one decode_step each
    def body(carry, _):
        token, state = carry
        logits, state = jax.vmap(lambda t, s: decode_step(params, cfg, t, s))(token, state)
        return (jnp.argmax(logits, -1).astype(jnp.int32), state), None

    return lax.scan(body, (token, state), None, length=steps)[0]


def matmul_weights(cfg: Config) -> int:
    """Weights multiplied per token (all but the embedding, which is a lookup)."""
    return count_params(rwkv_jax.abstract_params(cfg)) - cfg.vocab_size * cfg.n_embd


def rime_model(cfg_shape: tuple[int, int], cases, dtype) -> Model:
    """A random model whose vocab covers the cases' texts (padded to a multiple of 64)."""
    texts = []
    for case in cases:
        texts += [protocol.recipient_text(case)] + [protocol.question_prompt(q) for q in protocol.questions(case)]
        texts += [protocol.filler_text(case, mode, 0, 1) for mode in rime.FILLER_MODES]
    tokenizer, _ = subset_vocab(world_tokenizer(), texts, "bench")
    cfg = Config.default(*cfg_shape, -(-tokenizer.vocab_size // 64) * 64)
    return Model(params=perturbed_params(cfg, dtype=dtype), cfg=cfg, tokenizer=tokenizer)


def run(args) -> list[tuple[str, float, str, float | None]]:
    """(measurement, value, unit, roofline value or None)."""
    device = jax.devices()[0]
    dtype = jnp.float32 if args.small else jnp.bfloat16
    cfg = Config.default(args.layers, args.embd, args.vocab)
    params = jax.device_put(perturbed_params(cfg, dtype=dtype), device)
    bytes_w = sum(x.nbytes for x in jax.tree.leaves(params))
    flops_token = 2 * matmul_weights(cfg)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(lambda: State.zeros(cfg))))
    peak = peaks(device, args.peaks)
    out = []

    B, T = args.prefill_batch, args.prefill_len
    tokens = jax.device_put(np.random.default_rng(0).integers(0, cfg.vocab_size, (B, T), np.int32), device)
    for wkv in ("chunked", "scan"):
        seconds = timed(lambda p, t, w=wkv: prefill(p, cfg, t, wkv=w), params, tokens)
        out.append((f"prefill {wkv}, {B} x {T} tokens", B * T / seconds, "tokens/s",
                    peak and peak[1] / flops_token))

    dparams = jax.device_put(decode_params(params, cfg), device)
    for B in (1, 32, 256):
        state = jax.device_put(split_state(State.zeros(cfg, (B,))), device)
        token = jax.device_put(np.zeros(B, np.int32), device)
        seconds = timed(lambda p, t, s: decode(p, cfg, t, s, steps=args.decode_steps), dparams, token, state)
        bound = None
        if peak:
            step = max((bytes_w + 2 * B * state_bytes) / peak[0], B * flops_token / peak[1])
            bound = B / step
        out.append((f"decode, batch {B}", B * args.decode_steps / seconds, "tokens/s", bound))

    cases = rime.load("test")[: args.rime_cases]
    model = rime_model((args.layers, args.embd), cases, dtype)
    spec = Spec.build(fillers=(0, 1), max_new_tokens=8)
    evaluator = Evaluator(model, spec, batch_size=args.rime_batch)
    count = lambda: sum(len(rows) for group in evaluator.run(cases) for _, rows in group)
    count()
    start = time.perf_counter()
    n = count()
    out.append((f"RIME rows, {len(cases)} cases, batch {evaluator.layout.batch_size}, "
                f"{len(jax.devices())} device(s)", n / (time.perf_counter() - start), "rows/s", None))
    return out


def table(args, results) -> str:
    device = jax.devices()[0]
    peak = peaks(device, args.peaks)
    dtype = "fp32" if args.small else "bf16"
    lines = [SECTION, "",
             f"`python scripts/bench_accelerator.py {' '.join(sys.argv[1:])}` on "
             f"{len(jax.devices())} x {device.device_kind} ({device.platform}), JAX {jax.__version__}, "
             f"load average {os.getloadavg()[0]:.1f} at the start; "
             f"L{args.layers} D{args.embd} V{args.vocab}, {dtype}. Roofline: "
             + (f"{peak[0] / 1e9:.0f} GB/s HBM, {peak[1] / 1e12:.0f} TFLOP/s ({peak[2]})."
                if peak else "none (no peak figures for this device kind in `PEAKS`)."),
             "", "| measurement | measured | roofline | of roofline |", "|---|---|---|---|"]
    for name, value, unit, bound in results:
        roof = f"{bound:,.0f} {unit}" if bound else "n/a"
        share = f"{value / bound:.1%}" if bound else "n/a"
        lines.append(f"| {name} | {value:,.0f} {unit} | {roof} | {share} |")
    lines += ["", "Peak figures (`PEAKS`, per chip, dense bf16):", "",
              "| device kind | HBM GB/s | TFLOP/s | source |", "|---|---|---|---|"]
    lines += [f"| {kind} | {gbs} | {tflops} | {source} |" for kind, (gbs, tflops, source) in PEAKS.items()]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replaces this script's section of `path` (up to the next `## ` heading), or appends it."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="a small shape in fp32, for CPU and CI")
    p.add_argument("--layers", type=int)
    p.add_argument("--embd", type=int)
    p.add_argument("--vocab", type=int)
    p.add_argument("--prefill-batch", type=int)
    p.add_argument("--prefill-len", type=int)
    p.add_argument("--decode-steps", type=int)
    p.add_argument("--rime-cases", type=int)
    p.add_argument("--rime-batch", type=int)
    p.add_argument("--peaks", help="GBS,TFLOPS: this device's HBM GB/s and peak TFLOP/s, instead of `PEAKS`")
    p.add_argument("--write", type=Path, help="BENCHMARKS.md: (re)write this script's section")
    args = p.parse_args()
    small = dict(layers=2, embd=256, vocab=4096, prefill_batch=4, prefill_len=128, decode_steps=16,
                 rime_cases=2, rime_batch=64)
    large = dict(layers=24, embd=2048, vocab=65536, prefill_batch=8, prefill_len=2048, decode_steps=64,
                 rime_cases=32, rime_batch=2048)
    for name, value in (small if args.small else large).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    text = table(args, run(args))
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
