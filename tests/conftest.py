"""Test-wide JAX settings and small random models shared by the suites."""

import os
import pathlib

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's OpenMP spin-waits on 2 cores
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_numpy_dtype_promotion", "strict")

from rwkv_jax import Config  # noqa: E402
from rwkv_jax.params import perturbed_params  # noqa: E402, F401  (shared by the suites)


@pytest.fixture(scope="session")
def tiny():
    """A 2-layer, D=128 model with a small vocab: (cfg, params)."""
    cfg = Config.default(2, 128, 512)
    return cfg, perturbed_params(cfg)


@pytest.fixture
def key():
    return jax.random.key(1234)
