"""Benchmark `.pth` -> rwkv_jax conversion on a synthetic checkpoint of a real model's shape.

    python scripts/bench_convert.py                       # 1.5B shape: L=24, D=2048, V=65536, bf16
    python scripts/bench_convert.py --layers 2 --embd 512 # a quick smoke run

Writes a random `.pth` (in a child process), converts it in another child process and reports
wall time, throughput and the converter's peak resident memory relative to the file size, as a
markdown table. Each phase runs in its own process so the peak RSS is the converter's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_gb(field: str) -> float:
    """A `/proc/self/status` memory field (VmRSS now, VmHWM peak) in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise KeyError(field)


def generate(path: Path, layers: int, embd: int, vocab: int, dtype: str) -> None:
    """A random official `.pth` (normal * 0.02), one leaf at a time to keep this process small."""
    import jax
    import numpy as np

    from convert import write_pth
    from convert.assemble import as_dtype
    from rwkv_jax import Config
    from rwkv_jax.params import param_shapes

    cfg = Config.default(layers, embd, vocab)
    rng = np.random.default_rng(0)
    target = as_dtype(dtype)
    params = jax.tree.map(
        lambda shape: (0.02 * rng.standard_normal(shape, np.float32)).astype(target),
        param_shapes(cfg),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    write_pth(params, path)


def measure(src: Path, dst: Path) -> dict:
    """Runs `convert.convert` in this process and reports time and memory."""
    import convert

    baseline = _rss_gb("VmRSS")  # interpreter + jax + orbax + torch, before any tensor
    read_done = 0.0

    def on_tensor(name: str, index: int, count: int) -> None:
        nonlocal read_done
        read_done = time.perf_counter()

    start = time.perf_counter()
    convert.convert(src, dst, on_tensor=on_tensor)
    end = time.perf_counter()
    return {
        "baseline_rss_gb": baseline,
        "read_s": read_done - start,
        "save_s": end - read_done,
        "wall_s": end - start,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--embd", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory, removed")
    parser.add_argument("--_generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_measure", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._generate:
        return generate(args._generate, args.layers, args.embd, args.vocab, args.dtype)
    if args._measure:
        return print(json.dumps(measure(*args._measure)))

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        src, dst = Path(work) / "model.pth", Path(work) / "ckpt"
        shape = ["--layers", str(args.layers), "--embd", str(args.embd), "--vocab", str(args.vocab)]
        me = [sys.executable, __file__, *shape, "--dtype", args.dtype]
        t = time.perf_counter()
        subprocess.run([*me, "--_generate", str(src)], check=True)
        print(f"generated {src.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
        out = subprocess.run([*me, "--_measure", str(src), str(dst)], check=True,
                             capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        size = src.stat().st_size / 1e9
        out_size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file()) / 1e9

    rows = [
        ("shape", f"L={args.layers}, D={args.embd}, V={args.vocab}, {args.dtype}"),
        ("machine", f"{os.cpu_count()} CPU cores"),
        (".pth size", f"{size:.2f} GB"),
        ("orbax output size", f"{out_size:.2f} GB"),
        ("wall time", f"{result['wall_s']:.1f} s (read+check {result['read_s']:.1f} s, "
                      f"orbax save {result['save_s']:.1f} s)"),
        ("throughput", f"{size / result['wall_s']:.2f} GB/s"),
        ("peak RSS", f"{result['peak_rss_gb']:.2f} GB"),
        ("peak RSS / file size", f"{result['peak_rss_gb'] / size:.2f}x"),
        ("RSS before reading (imports)", f"{result['baseline_rss_gb']:.2f} GB"),
    ]
    print("| metric | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
