"""Converted checkpoints against the official `rwkv` package: same logits, same state.

Every path into an rwkv_jax checkpoint (.pth fp32/bf16, HF fp32/bf16; every naming in every
container) and the export back to .pth are run on 64 tokens; tolerance: max abs error <= 1e-4 on
float32 logits and state.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("rwkv")

from oracle import load_official, official_forward  # noqa: E402
from test_convert import TINY, byte_vocab  # noqa: E402

import convert  # noqa: E402
from rwkv_jax import State, checkpoint, forward  # noqa: E402

TOL = 1e-4
T = 64


@pytest.fixture(scope="module")
def params(tiny) -> dict:
    assert tiny[0] == TINY
    return tiny[1]


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, TINY.vocab_size, T).astype(np.int32)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    return byte_vocab(tmp_path_factory.mktemp("vocab") / "bytes.txt")


def run_ours(params: dict, tokens: np.ndarray) -> tuple[np.ndarray, State]:
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    logits, state = forward(params, TINY, jnp.asarray(tokens), wkv="scan")
    return np.asarray(logits), state


def assert_matches_official(ours: tuple[np.ndarray, State], pth: Path, tokens: np.ndarray):
    assert_matches(ours, official_forward(load_official(pth), tokens))


def assert_matches(ours: tuple[np.ndarray, State], theirs: tuple[np.ndarray, State]):
    assert np.std(theirs[0]) > 0.5  # the random model is not degenerate
    err = float(np.max(np.abs(ours[0] - theirs[0])))
    assert err <= TOL, f"logits: max abs error {err:.2e}"
    for name in ("wkv", "att_shift", "ffn_shift"):
        err = float(np.max(np.abs(np.asarray(getattr(ours[1], name)) - getattr(theirs[1], name))))
        assert err <= TOL, f"{name}: max abs error {err:.2e}"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("fmt", ["pth", "hf"])
def test_converted_checkpoint_matches_official(tmp_path, params, tokens, vocab, fmt, dtype):
    pth = tmp_path / "official.pth"
    convert.write_pth(params, pth, dtype=dtype)  # what the official package runs
    src = pth if fmt == "pth" else convert.write_hf(params, tmp_path / "hf", dtype=dtype)
    model = checkpoint.load(convert.convert(src, tmp_path / "ckpt", vocab=vocab))
    assert model.cfg == TINY
    assert model.params["emb"].dtype == convert.assemble.DTYPES[dtype]
    assert_matches_official(run_ours(model.params, tokens), pth, tokens)


def test_exported_pth_runs_in_official_package_with_our_logits(tmp_path, params, tokens, vocab):
    ckpt = checkpoint.save(tmp_path / "ckpt", params, TINY, str(vocab))
    pth = convert.convert(ckpt, tmp_path / "exported.pth")
    assert_matches_official(run_ours(params, tokens), pth, tokens)


@pytest.fixture(scope="module")
def official_fp32(tmp_path_factory, params, tokens) -> tuple[np.ndarray, State]:
    pth = tmp_path_factory.mktemp("official") / "official.pth"
    convert.write_pth(params, pth, dtype="fp32")
    return official_forward(load_official(pth), tokens)


@pytest.mark.parametrize("container", ["pth", "safetensors", "folder", "sharded"])
@pytest.mark.parametrize("naming", ["blink", "fla", "transformers"])
def test_every_naming_in_every_container_imports_to_the_official_model(
    tmp_path, params, tokens, vocab, official_fp32, naming, container
):
    if container == "pth":
        src = tmp_path / "m.pth"
        convert.write_pth(params, src, naming=naming)
    elif container == "safetensors":
        src = convert.write_safetensors(params, tmp_path / "m.safetensors", naming=naming)
    else:
        shard = 200_000 if container == "sharded" else None
        src = convert.write_hf(params, tmp_path / "hf", naming=naming, max_shard_bytes=shard)
    model = checkpoint.load(convert.convert(src, tmp_path / "ckpt", vocab=vocab))
    assert model.cfg == TINY
    assert_matches(run_ours(model.params, tokens), official_fp32)


def test_load_of_an_official_pth_runs_as_the_official_package(params, tokens, official_fp32, tmp_path):
    pth = tmp_path / "m.pth"
    convert.write_pth(params, pth, dtype="bf16")
    model = convert.load(pth, vocab="none", dtype="fp32")
    assert model.params["emb"].dtype == jnp.float32
    theirs = official_forward(load_official(pth), tokens)
    assert_matches(run_ours(model.params, tokens), theirs)
