"""Native CPU kernels behind `rwkv_jax.quant`, built from source on first use.

XLA's CPU backend widens bfloat16 and int8 weights to a float32 copy before a dot, so a narrow
weight costs more than a float32 one (BENCHMARKS.md, "Half- and quarter-width weights").
`product.cc` reads them at their own width instead, at a few rows (decode) and at many (prefill,
batched decode). It is compiled once per source, jaxlib and compiler
into `$RWKV_JAX_KERNEL_CACHE` (default `~/.cache/rwkv_jax/kernels`) with `$CXX` (default `g++`)
and registered as XLA FFI targets. Without a compiler the products fall back to XLA's dots:
same numbers, no speed-up; `status()` says which.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import jax
import jaxlib

SOURCE = "product.cc"
# weight dtype -> symbol
TARGETS = {"bfloat16": "RwkvProductBf16", "int8": "RwkvProductInt8", "float32": "RwkvProductF32"}
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c++17", "-w")


def _cache_dir() -> Path:
    return Path(os.environ.get("RWKV_JAX_KERNEL_CACHE", Path.home() / ".cache" / "rwkv_jax" / "kernels"))


def _build(source: bytes, compiler: str) -> Path:
    """The shared library for `source`, compiled unless a build of the same inputs exists."""
    tag = hashlib.sha256(b"\0".join([source, jaxlib.__version__.encode(), compiler.encode(),
                                      " ".join(FLAGS).encode()])).hexdigest()[:16]
    out = _cache_dir() / f"product-{tag}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        built = Path(tmp) / out.name
        subprocess.run([compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(src), "-o", str(built)],
                       check=True, capture_output=True, text=True)
        os.replace(built, out)  # atomic: a concurrent build writes the same bytes
    return out


@functools.cache
def _load() -> tuple[bool, str]:
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return False, f"no C++ compiler ({compiler!r} not found; set CXX)"
    try:
        path = _build(resources.files(__name__).joinpath(SOURCE).read_bytes(), compiler)
    except subprocess.CalledProcessError as e:
        return False, f"{compiler} failed to build {SOURCE}: {e.stderr.strip()[-400:]}"
    except OSError as e:
        return False, f"could not build {SOURCE} in {_cache_dir()}: {e}"
    lib = ctypes.cdll.LoadLibrary(str(path))
    for dtype, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target_name(dtype), jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return True, f"built {path}"


def target_name(dtype: str) -> str:
    return f"rwkv_jax_product_{dtype}"


def available() -> bool:
    """Whether the native products are registered (built now if need be)."""
    return _load()[0]


def status() -> str:
    """What `available()` found: the library's path, or why there is none."""
    return _load()[1]
