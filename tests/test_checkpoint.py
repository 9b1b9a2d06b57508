"""Orbax checkpoints: exact round trips, shape checks, atomic writes."""

import json

import jax
import jax.numpy as jnp
import pytest
from conftest import perturbed_params

from rwkv_jax import Config, Tokenizer, load, save
from rwkv_jax.checkpoint import load as load_dir


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_round_trip_is_bit_exact(tmp_path, dtype):
    cfg = Config.default(2, 128, 300)
    params = perturbed_params(cfg, dtype=dtype)
    save(tmp_path / "ckpt", params, cfg)
    model = load(tmp_path / "ckpt")
    assert model.cfg == cfg and model.tokenizer.name == "rwkv_vocab_v20230424"
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(model.params)):
        assert a.dtype == b.dtype and bool(jnp.array_equal(a, b))


def test_custom_tokenizer_travels_with_checkpoint(tmp_path):
    tok = Tokenizer({b + 1: bytes([b]) for b in range(256)} | {257: b"hello"}, name="mine")
    cfg = Config.default(1, 64, tok.vocab_size, head_size=64)
    save(tmp_path / "c", perturbed_params(cfg), cfg, tok)
    assert load(tmp_path / "c").tokenizer.encode("hello!") == [257, ord("!") + 1]


def test_other_shape_is_refused_with_the_differing_fields(tmp_path):
    cfg = Config.default(2, 128, 300)
    save(tmp_path / "c", perturbed_params(cfg), cfg)
    with pytest.raises(ValueError, match="n_layer: checkpoint 2 != expected 3"):
        load(tmp_path / "c", expect=Config.default(3, 128, 300))
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    meta["config"]["n_embd"] = 256
    (tmp_path / "c" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its own config"):
        load_dir(tmp_path / "c")


def test_save_checks_params_and_leaves_nothing_behind(tmp_path):
    cfg = Config.default(2, 128, 300)
    params = perturbed_params(cfg)
    with pytest.raises(ValueError, match="expected"):
        save(tmp_path / "c", params, Config.default(2, 128, 301))
    assert list(tmp_path.iterdir()) == []
    save(tmp_path / "c", params, cfg)
    with pytest.raises(FileExistsError):
        save(tmp_path / "c", params, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_unknown_names_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundled model"):
        load("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an rwkv_jax checkpoint"):
        load(tmp_path / "empty")
