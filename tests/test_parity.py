"""Parity with the official `rwkv` package (x070, `cpu fp32`) on random official checkpoints.

Tolerance: max abs error <= 1e-4 on logits and on every state component, in float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
from conftest import perturbed_params  # noqa: E402
from oracle import load_official, official_forward  # noqa: E402

from convert import read_pth, write_pth  # noqa: E402
from rwkv_jax import Config, State, forward  # noqa: E402

TOL = 1e-4
CASES = [
    # (n_layer, n_embd, vocab, file dtype, layer-0 v keys in the file)
    (2, 128, 65536, "bfloat16", True),
    (2, 128, 65536, "float32", False),
    (3, 256, 20000, "float32", True),
    (3, 256, 20000, "bfloat16", False),
]


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def assert_state_close(ours: State, theirs: State) -> None:
    for name in ("wkv", "att_shift", "ffn_shift"):
        err = max_err(getattr(ours, name), getattr(theirs, name))
        assert err <= TOL, f"{name}: max abs error {err:.2e}"


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"L{c[0]}-D{c[1]}-V{c[2]}-{c[3]}-v0{c[4]}")
def pair(request, tmp_path_factory):
    L, D, V, dtype, layer0_v = request.param
    cfg = Config.default(L, D, V)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    write_pth(perturbed_params(cfg, seed=L, scale=0.08), path, dtype=dtype, layer0_v=layer0_v)
    params, file_cfg, _ = read_pth(path)
    assert file_cfg == cfg
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return cfg, params, load_official(path)


@pytest.mark.parametrize("impl", ["chunked", "scan"])
def test_logits_and_state_match_official(pair, impl):
    cfg, params, official = pair
    toks = np.random.default_rng(cfg.n_layer).integers(0, cfg.vocab_size, 80)
    ref_logits, ref_state = official_forward(official, toks)
    logits, state = forward(params, cfg, jnp.asarray(toks), wkv=impl)
    assert float(np.std(ref_logits)) > 0.1  # the comparison is not vacuous
    err = max_err(logits, ref_logits)
    assert err <= TOL, f"logits: max abs error {err:.2e}"
    assert_state_close(state, ref_state)


def test_continuing_from_a_state_matches_official(pair):
    cfg, params, official = pair
    toks = np.random.default_rng(7).integers(0, cfg.vocab_size, 70)
    _, mid = official_forward(official, toks[:40])
    ref_logits, ref_state = official_forward(official, toks[40:], mid)
    _, ours_mid = forward(params, cfg, jnp.asarray(toks[:40]))
    logits, state = forward(params, cfg, jnp.asarray(toks[40:]), ours_mid)
    assert max_err(logits, ref_logits) <= TOL
    assert_state_close(state, ref_state)
