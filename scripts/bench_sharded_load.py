"""Peak host memory of loading a checkpoint onto an 8-device CPU mesh, against loading it unsharded.

    python scripts/bench_sharded_load.py --dir /tmp/rwkv-1.5b          # writes the checkpoint once
    python scripts/bench_sharded_load.py --dir /tmp/rwkv-1.5b --markdown

Each load runs in a fresh process (`--xla_force_host_platform_device_count=8`) and reports its
peak RSS (`VmHWM`) and the RSS before loading. On CPU the "devices" are host memory, so every
load holds the whole model in the process at the end; what differs is the copy on the way there:
`load(sharding=mesh)` reads each device's shards straight from the files, `load` then
`shard_params` stages the whole model first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rwkv_jax
from rwkv_jax.params import param_shapes

MODES = {
    "unsharded": "rwkv_jax.load(path)",
    "load(sharding=mesh), data=1 model=8": "rwkv_jax.load(path, sharding=rwkv_jax.make_mesh(1, 8))",
    "load(sharding=mesh), data=2 model=4": "rwkv_jax.load(path, sharding=rwkv_jax.make_mesh(2, 4))",
    "load, then shard_params, data=1 model=8": "(lambda m: rwkv_jax.shard_params(m.params, m.cfg, "
                                               "rwkv_jax.make_mesh(1, 8)))(rwkv_jax.load(path))",
}


def write(path: Path, layers: int, embd: int, vocab: int, dtype: str) -> None:
    """A checkpoint of random values at the given shape (values do not matter for loading)."""
    cfg = rwkv_jax.Config.default(layers, embd, vocab)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s, np.float32)).astype(jnp.dtype(dtype)),
                          param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    rwkv_jax.save(path, params, cfg, tokenizer=None)


def measure(path: Path, expression: str) -> dict:
    code = f"""
import json, time
import jax, rwkv_jax

def status(field):  # kB; VmHWM is the peak RSS of this process image (ru_maxrss would include the parent's)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))

jax.devices()
before = status("VmRSS")
path = {str(path)!r}
start = time.perf_counter()
params = {expression}
jax.block_until_ready(params)
seconds = time.perf_counter() - start
print(json.dumps({{"before_kb": before, "peak_kb": status("VmHWM"), "seconds": seconds}}))
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="checkpoint folder (written if missing)")
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--embd", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--markdown", action="store_true", help="print a BENCHMARKS.md table")
    args = p.parse_args()
    if not args.dir.exists():
        start = time.perf_counter()
        write(args.dir, args.layers, args.embd, args.vocab, args.dtype)
        print(f"wrote {args.dir} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    meta = json.loads((args.dir / "meta.json").read_text())
    size = sum(f.stat().st_size for f in (args.dir / "params").rglob("*") if f.is_file())
    print(f"{args.dir}: {meta['config']}, {meta['dtype']}, {size / 2**30:.2f} GiB of params files")
    rows = [(mode, measure(args.dir, expression)) for mode, expression in MODES.items()]
    if args.markdown:
        print("| load | RSS before (GiB) | peak RSS (GiB) | peak - before (GiB) | seconds |\n|---|---|---|---|---|")
    for mode, r in rows:
        before, peak = r["before_kb"] / 2**20, r["peak_kb"] / 2**20
        if args.markdown:
            print(f"| {mode} | {before:.2f} | {peak:.2f} | {peak - before:.2f} | {r['seconds']:.1f} |")
        else:
            print(f"{mode:<45} before {before:6.2f} GiB  peak {peak:6.2f} GiB  ({peak - before:+.2f})  "
                  f"{r['seconds']:.1f} s")


if __name__ == "__main__":
    main()
