"""State files against the official `rwkv` package: a state written here continues a prompt there
exactly as it does here, and one of theirs continues here as it does there. Tolerance: max abs
error <= 1e-4 on float32 logits (tiny random model, 24 + 12 tokens)."""

from __future__ import annotations

import copy
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("rwkv")

from oracle import load_official, official_forward  # noqa: E402
from test_convert import TINY  # noqa: E402
from test_convert_pth import _RunsCode  # noqa: E402

import convert  # noqa: E402
from rwkv_jax import Config, State, forward  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def params(tiny) -> dict:
    assert tiny[0] == TINY
    return tiny[1]


@pytest.fixture(scope="module")
def official(tmp_path_factory, params):
    pth = tmp_path_factory.mktemp("official") / "model.pth"
    convert.write_pth(params, pth, dtype="fp32")
    return load_official(pth)


@pytest.fixture(scope="module")
def tokens() -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(1).integers(1, TINY.vocab_size, 36).astype(np.int32)
    return ids[:24], ids[24:]


def ours(params: dict, tokens: np.ndarray, state: State | None = None) -> tuple[np.ndarray, State]:
    logits, state = forward(params, TINY, jnp.asarray(tokens), state, wkv="scan")
    return np.asarray(logits), state


def official_continue(model, tokens: np.ndarray, state_list: list) -> np.ndarray:
    with torch.no_grad():
        logits, _ = model.forward([int(t) for t in tokens], copy.deepcopy(state_list), full_output=True)
    return logits.float().numpy()


def max_err(a: np.ndarray, b: np.ndarray) -> float:
    assert np.std(b) > 0.5  # the random model is not degenerate
    return float(np.max(np.abs(a - b)))


def test_state_list_written_here_continues_the_prompt_in_the_official_package(tmp_path, params, official, tokens):
    prompt, more = tokens
    _, state = ours(params, prompt)
    path = convert.save_state(state, tmp_path / "state.pth")
    loaded = torch.load(path, weights_only=True)  # what a user of the package does
    assert len(loaded) == 3 * TINY.n_layer and loaded[1].shape == (TINY.n_head, TINY.head_size, TINY.head_size)
    assert max_err(ours(params, more, state)[0], official_continue(official, more, loaded)) <= TOL


def test_peft_state_file_is_the_initial_wkv_the_official_package_runs_from(tmp_path, params, official, tokens):
    prompt, more = tokens
    _, state = ours(params, prompt)
    tuned = wkv_only(state)
    path = convert.save_state(tuned, tmp_path / "rwkv-0.pth", format="peft")
    time_state = torch.load(path, weights_only=True)
    assert sorted(time_state) == [f"blocks.{i}.att.time_state" for i in range(TINY.n_layer)]
    zeros = torch.zeros(TINY.n_embd)
    as_list = [t for i in range(TINY.n_layer) for t in (zeros, time_state[f"blocks.{i}.att.time_state"], zeros)]
    assert max_err(ours(params, more, tuned)[0], official_continue(official, more, as_list)) <= TOL
    assert np.array_equal(np.asarray(convert.load_state(path, TINY).wkv), np.asarray(tuned.wkv))


def test_a_state_from_the_official_package_continues_here_as_there(tmp_path, params, official, tokens):
    prompt, more = tokens
    with torch.no_grad():
        _, theirs = official.forward([int(t) for t in prompt], None)
    torch.save(theirs, tmp_path / "theirs.pth")
    state = convert.load_state(tmp_path / "theirs.pth", TINY)
    assert max_err(ours(params, more, state)[0], official_continue(official, more, theirs)) <= TOL
    assert max_err(ours(params, more, state)[0], official_forward(official, more, state)[0]) <= TOL


def wkv_only(state: State) -> State:
    """The state with its token shifts zeroed: what a peft file can hold."""
    return State(wkv=state.wkv, att_shift=jnp.zeros_like(state.att_shift), ffn_shift=jnp.zeros_like(state.ffn_shift))


def random_state(seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    L, H, N, D = TINY.n_layer, TINY.n_head, TINY.head_size, TINY.n_embd
    return State(wkv=jnp.asarray(rng.standard_normal((L, H, N, N), np.float32)),
                 att_shift=jnp.asarray(rng.standard_normal((L, D), np.float32)),
                 ffn_shift=jnp.asarray(rng.standard_normal((L, D), np.float32)))


def assert_same_state(a: State, b: State) -> None:
    for name in ("wkv", "att_shift", "ffn_shift"):
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name


@pytest.mark.parametrize("name, fmt", [("s.pth", "list"), ("s.pth", "peft"), ("s.safetensors", "peft")])
def test_state_files_round_trip_exactly(tmp_path, name, fmt):
    state = wkv_only(random_state()) if fmt == "peft" else random_state()
    assert_same_state(convert.load_state(convert.save_state(state, tmp_path / name, format=fmt)), state)


def test_bf16_shifts_are_stored_for_a_bf16_runtime_and_the_wkv_stays_fp32(tmp_path):
    path = convert.save_state(random_state(), tmp_path / "s.pth", dtype="bf16")
    loaded = torch.load(path, weights_only=True)
    assert [t.dtype for t in loaded[:3]] == [torch.bfloat16, torch.float32, torch.bfloat16]


def test_a_peft_file_refuses_to_lose_token_shifts_unless_told(tmp_path):
    state = random_state()
    with pytest.raises(convert.StateFileError, match="token shifts are not zero; write format='list'"):
        convert.save_state(state, tmp_path / "s.pth", format="peft")
    assert not (tmp_path / "s.pth").exists()
    dropped = convert.load_state(convert.save_state(state, tmp_path / "s.pth", format="peft", shifts="drop"))
    assert np.array_equal(np.asarray(dropped.wkv), np.asarray(state.wkv)) and not np.asarray(dropped.att_shift).any()


def test_batched_states_are_refused(tmp_path):
    batch = State.zeros(TINY, (2,))
    with pytest.raises(ValueError, match="batch shape \\(2,\\)"):
        convert.save_state(batch, tmp_path / "s.pth")


def _saved(tmp_path: Path, obj: object) -> Path:
    torch.save(obj, tmp_path / "bad.pth")
    return tmp_path / "bad.pth"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: [torch.zeros(128)] * 4, "4 tensors, not a multiple of 3"),
        (lambda: [torch.zeros(128), torch.zeros(2, 64, 64), torch.zeros(127)],
         r"state\[2\] \(layer 0 ffn\) has shape \(127,\), expected \(128,\)"),
        (lambda: {"blocks.0.att.time_state": torch.zeros(2, 64, 64), "blocks.0.att.w1": torch.zeros(3)},
         "holds only blocks.{i}.att.time_state; it has blocks.0.att.w1"),
        (lambda: {"blocks.1.att.time_state": torch.zeros(2, 64, 64)}, r"no time_state for layers \[0\]"),
        (lambda: {"blocks.0.att.time_state": torch.zeros(2, 64, 64, dtype=torch.int32)}, "dtype torch.int32"),
        (lambda: {"blocks.0.att.time_state": torch.full((2, 64, 64), float("nan"))}, "holds 8192 NaN/Inf"),
        (lambda: 3, "got int"),
    ],
)
def test_bad_state_files_are_refused_naming_what_is_wrong(tmp_path, make, message):
    with pytest.raises(convert.ConvertError, match=message):
        convert.load_state(_saved(tmp_path, make()))


def test_a_state_of_another_model_is_refused(tmp_path):
    path = convert.save_state(random_state(), tmp_path / "s.pth")
    with pytest.raises(convert.StateFileError, match="does not belong to a model with L=3"):
        convert.load_state(path, Config.default(3, 128, 512))


def test_a_code_running_pickle_is_not_loaded(tmp_path):
    marker = tmp_path / "code-ran"
    with pytest.raises(convert.UnsafeCheckpointError):
        convert.load_state(_saved(tmp_path, [_RunsCode(str(marker))]))
    assert not marker.exists()
