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
jax.config.update("jax_numpy_rank_promotion", "raise")

from rwkv_jax import Config  # noqa: E402
from rwkv_jax.batch import Reader  # noqa: E402
from rwkv_jax.bundle import Model  # noqa: E402
from rwkv_jax.params import perturbed_params  # noqa: E402, F401  (shared by the suites)
from rwkv_jax.tokenizer import Tokenizer  # noqa: E402


def byte_tokenizer() -> Tokenizer:
    """One token per byte (ids 1..256): every string encodes, and a 257-row vocab suffices."""
    return Tokenizer({i + 1: bytes([i]) for i in range(256)}, name="bytes")


@pytest.fixture(scope="session")
def tiny():
    """A 2-layer, D=128 model with a small vocab: (cfg, params)."""
    cfg = Config.default(2, 128, 512)
    return cfg, perturbed_params(cfg)


@pytest.fixture(scope="session")
def model(tiny):
    """`tiny` as a `Model` with the byte tokenizer (a suite's own `model` fixture overrides it)."""
    cfg, params = tiny
    return Model(params, cfg, byte_tokenizer())


@pytest.fixture(scope="session")
def recipients(model):
    """Two chat states that hold the old value, as an evaluator's recipients would: `[2]`."""
    texts = ["User: Rohan drives a hatchback.\n\n", "User: Esme and Rohan own a hatchback.\n\n"]
    return Reader(model.params, model.cfg).read_texts(model.tokenizer, texts)[1]


@pytest.fixture
def key():
    return jax.random.key(1234)


RUN_CASE_IDS = ("test-001", "test-010", "test-006")  # same-value distractor; stack + joint edit; composition


@pytest.fixture(scope="session")
def run_cases():
    """Three bundled test cases that cover the protocol's row kinds."""
    import rime

    by_id = {c.id: c for c in rime.load("test")}
    return [by_id[i] for i in RUN_CASE_IDS]


@pytest.fixture(scope="session")
def run_model_dir(tmp_path_factory, run_cases):
    """A saved random 2-layer model whose vocab covers the run cases' texts."""
    import rime
    import rwkv_jax
    from rime.eval import protocol
    from rwkv_jax.tokenizer import subset_vocab, world_tokenizer

    texts = []
    for case in run_cases:
        texts.append(protocol.recipient_text(case))
        texts += [protocol.question_prompt(q) for q in protocol.questions(case)]
        texts += [protocol.filler_text(case, mode, 0, 1) for mode in rime.FILLER_MODES]
    tokenizer, _ = subset_vocab(world_tokenizer(), texts, "rime-test")
    model = rwkv_jax.random_model(2, 64, tokenizer=tokenizer, seed=3)
    return rwkv_jax.save(tmp_path_factory.mktemp("model") / "random", model.params, model.cfg, tokenizer)
