"""State tuning: gradients through the state against finite differences (both wkv
implementations), a run that lowers the loss and resumes exactly, and the script's state file."""

from __future__ import annotations

import json
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convert
from editing.state_tune import StateTuneConfig, final_state, read_dialogues, state_loss, tune_state
from rwkv_jax import Model, State, save
from rwkv_jax.tokenizer import byte_tokenizer

DIALOGUES = [
    "User: Where does Rohan live?\n\nAssistant: Rohan lives in Lisbon.\n\n",
    "User: What does Mira drive?\n\nAssistant: Mira drives a minivan.\n\n",
    "User: Who paints?\n\nAssistant: Bo paints.\n\n",
]


@pytest.fixture(scope="module")
def batch(tiny):
    cfg, _ = tiny
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, cfg.vocab_size, (2, 41)), jnp.int32)
    weights = jnp.asarray(rng.uniform(0.2, 1.0, (2, 40)), jnp.float32).at[1, 33:].set(0.0)
    return tokens, weights, jnp.array([40, 33], jnp.int32)


def random_state(cfg, seed: int) -> State:
    keys = jax.random.split(jax.random.key(seed), 3)
    zeros = State.zeros(cfg)
    return jax.tree.map(lambda k, z: 0.3 * jax.random.normal(k, z.shape, jnp.float32), State(*keys), zeros)


def dot(a: State, b: State) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("wkv", ["scan", "chunked"])
@pytest.mark.parametrize("part", ["wkv", "att_shift", "ffn_shift"])
def test_state_gradient_matches_finite_differences(tiny, batch, wkv, part):
    cfg, params = tiny
    state = random_state(cfg, 1)
    loss = jax.jit(lambda s: state_loss(s, params, cfg, *batch, wkv=wkv))
    grad = jax.grad(lambda s: state_loss(s, params, cfg, *batch, wkv=wkv))(state)
    # a unit direction in one component: mostly along its gradient (so the change is well above
    # fp32 noise), partly random (so a gradient in the wrong place or layout shows)
    g = getattr(grad, part)
    noise = jax.random.normal(jax.random.key(2), g.shape, jnp.float32)
    mixed = g / jnp.linalg.norm(g) + 0.5 * noise / jnp.linalg.norm(noise)
    direction = jax.tree.map(jnp.zeros_like, state).replace(**{part: mixed / jnp.linalg.norm(mixed)})
    eps = 3e-2
    step = lambda sign: jax.tree.map(lambda s, d: s + sign * eps * d, state, direction)  # noqa: E731
    numeric = (loss(step(1.0)) - loss(step(-1.0))) / (2 * eps)
    analytic = dot(grad, direction)
    assert abs(float(analytic)) > 1e-2  # the state really moves the loss
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=2e-2)


def test_scan_and_chunked_give_the_same_state_gradient(tiny, batch):
    cfg, params = tiny
    state = random_state(cfg, 3)
    grads = [jax.grad(state_loss)(state, params, cfg, *batch, wkv=w) for w in ("scan", "chunked")]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-6)


@pytest.fixture(scope="module")
def tuned_model(tiny):
    cfg, params = tiny
    return Model(params, cfg, byte_tokenizer())


STC = StateTuneConfig(batch_size=2, seq_len=48, steps=4, lr=0.05, checkpoint_every=2, data="dialogues")


def test_tuning_lowers_the_loss_trains_only_the_wkv_and_resumes_exactly(tmp_path, tuned_model):
    full = list(tune_state(tuned_model, DIALOGUES, STC, tmp_path / "a"))
    assert [m["step"] for m in full] == [1, 2, 3, 4]
    assert full[-1]["loss"] < full[0]["loss"]
    state = full[-1]["state"]
    assert np.asarray(state.wkv).any() and not np.asarray(state.att_shift).any()  # model and shifts frozen
    assert [m["step"] for m in tune_state(tuned_model, DIALOGUES, STC, tmp_path / "b", stop_at=2)] == [1, 2]
    resumed = list(tune_state(tuned_model, DIALOGUES, STC, tmp_path / "b"))
    assert [m["step"] for m in resumed] == [3, 4]
    for a, b in zip(jax.tree.leaves(resumed[-1]["state"]), jax.tree.leaves(state), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="holds a run with other settings"):
        next(tune_state(tuned_model, DIALOGUES, StateTuneConfig(steps=5, data="dialogues"), tmp_path / "b"))


def test_script_writes_a_peft_state_file_of_the_run(tmp_path, tiny, tuned_model, monkeypatch, capsys):
    cfg, params = tiny
    ckpt = save(tmp_path / "model", params, cfg, byte_tokenizer())
    data = tmp_path / "dialogues.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in DIALOGUES))
    out = tmp_path / "tuned.pth"
    argv = ["state_tune.py", "--model", str(ckpt), "--data", str(data), "--run", str(tmp_path / "run"),
            "--out", str(out), "--steps", "4", "--batch-size", "2", "--seq-len", "48", "--lr", "0.05",
            "--checkpoint-every", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path("scripts/state_tune.py", run_name="__main__")
    assert f"wrote {out}" in capsys.readouterr().out
    stc = StateTuneConfig(batch_size=2, seq_len=48, steps=4, lr=0.05, checkpoint_every=2, data=str(data))
    expected = final_state(tuned_model, stc, tmp_path / "run")
    assert np.array_equal(np.asarray(convert.load_state(out, cfg).wkv), np.asarray(expected.wkv))


def test_bad_dialogue_files_are_refused_naming_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "User: hi\\n\\nAssistant: hello"}\n{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=r'd.jsonl:2: expected an object with a non-empty string "text"'):
        read_dialogues(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no dialogues"):
        read_dialogues(path)
