"""Official `.pth` files: reading by name, bit-identical round trips, and every bad-file case."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_convert import TINY, random_params  # noqa: E402

import convert  # noqa: E402
from rwkv_jax import Config  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def official_state_dict(cfg: Config, dtype: torch.dtype, *, layer0_v: bool) -> dict:
    """A checkpoint as the official trainer lays it out, built from the reference table alone,
    in shuffled key order (readers must match by name)."""
    C, V, F, H, N = cfg.n_embd, cfg.vocab_size, cfg.dim_ffn, cfg.n_head, cfg.head_size
    vec = (1, 1, C)
    shapes = {
        "emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,),
        "ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C),
    }
    for i in range(cfg.n_layer):
        b = f"blocks.{i}."
        shapes |= {b + n: (C,) for n in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias")}
        shapes |= {b + f"att.x_{x}": vec for x in "rwkvag"}
        for x, rank in (("w", cfg.d_decay), ("a", cfg.d_aaa), ("v", cfg.d_mv), ("g", cfg.d_gate)):
            if x == "v" and i == 0 and not layer0_v:
                continue
            shapes |= {b + f"att.{x}1": (C, rank), b + f"att.{x}2": (rank, C)}
            if x != "g":
                shapes[b + f"att.{x}0"] = vec
        shapes |= {b + "att.k_k": vec, b + "att.k_a": vec, b + "att.r_k": (H, N)}
        shapes |= {b + f"att.{m}.weight": (C, C) for m in ("receptance", "key", "value", "output")}
        shapes |= {b + "att.ln_x.weight": (C,), b + "att.ln_x.bias": (C,), b + "ffn.x_k": vec}
        shapes |= {b + "ffn.key.weight": (F, C), b + "ffn.value.weight": (C, F)}
    names = list(shapes)
    random.Random(0).shuffle(names)
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(shapes[k], generator=gen).to(dtype) for k in names}


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pth") / "official.pth"
    torch.save(official_state_dict(TINY, torch.bfloat16, layer0_v=True), path)
    return path


def test_read_maps_official_names_and_layouts(official):
    state = torch.load(official, weights_only=True)
    params, cfg, meta = convert.read_pth(official)
    assert cfg == TINY
    assert (meta.container, meta.naming) == ("pth", "blink") and meta.dtype == "bfloat16" and meta.layer0_v

    def same(ours, theirs):
        ours, theirs = np.asarray(ours), theirs.view(torch.int16).numpy()
        assert np.array_equal(ours.view(np.int16), theirs)

    att = params["blocks"]["att"]
    same(att["receptance"][1], state["blocks.1.att.receptance.weight"].T.contiguous())
    same(att["w1"][1], state["blocks.1.att.w1"])
    same(att["x_g"][0], state["blocks.0.att.x_g"][0, 0])
    same(att["r_k"][1], state["blocks.1.att.r_k"])
    same(att["v2"][0], state["blocks.0.att.v2"])
    same(params["ln0"]["bias"], state["blocks.0.ln0.bias"])
    same(params["head"], state["head.weight"].T.contiguous())
    same(params["blocks"]["ffn"]["value"][0], state["blocks.0.ffn.value.weight"].T.contiguous())


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("layer0_v", [True, False])
def test_round_trip_is_bit_identical(tmp_path, dtype, layer0_v):
    original = official_state_dict(TINY, DTYPES[dtype], layer0_v=layer0_v)
    torch.save(original, tmp_path / "a.pth")
    params, _, meta = convert.read_pth(tmp_path / "a.pth")
    assert meta.layer0_v == layer0_v
    assert not np.asarray(params["blocks"]["att"]["v1"][0]).any() or layer0_v
    convert.write_pth(params, tmp_path / "b.pth", layer0_v=meta.layer0_v)
    assert_same_tensors(original, torch.load(tmp_path / "b.pth", weights_only=True))


@pytest.mark.parametrize("naming", ["fla", "transformers"])
def test_other_namings_in_a_pth_are_detected_and_round_trip(tmp_path, naming):
    params = random_params(TINY)
    convert.write_pth(params, tmp_path / "a.pth", naming=naming)
    state = torch.load(tmp_path / "a.pth", weights_only=True)
    assert ("lm_head.weight" if naming == "fla" else "rwkv7.emb.weight") in state
    got, _, meta = convert.read_pth(tmp_path / "a.pth")
    assert (meta.container, meta.naming) == ("pth", naming)
    convert.write_pth(got, tmp_path / "b.pth", naming=naming)
    assert_same_tensors(state, torch.load(tmp_path / "b.pth", weights_only=True))


def test_legacy_fused_token_shift_is_split_in_a_pth_too(tmp_path):
    params = random_params(TINY)
    convert.write_pth(params, tmp_path / "fla.pth", naming="fla")
    state = torch.load(tmp_path / "fla.pth", weights_only=True)
    for i in range(TINY.n_layer):
        prefix = f"model.layers.{i}.attn."
        state[prefix + "x_x"] = torch.cat([state.pop(prefix + x)[0] for x in convert.keymap.TOKEN_SHIFT])
    torch.save(state, tmp_path / "fused.pth")
    fused, _, meta = convert.read_pth(tmp_path / "fused.pth")
    assert meta.naming == "fla"
    expected, _, _ = convert.read_pth(tmp_path / "fla.pth")
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(expected), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_read_can_upcast_and_mixed_files_default_to_fp32(tmp_path):
    state = official_state_dict(TINY, torch.bfloat16, layer0_v=True)
    state["head.weight"] = state["head.weight"].float()
    torch.save(state, tmp_path / "mixed.pth")
    params, _, meta = convert.read_pth(tmp_path / "mixed.pth")
    assert meta.dtype == "mixed" and params["emb"].dtype == np.float32
    params, _, _ = convert.read_pth(tmp_path / "mixed.pth", dtype="bf16")
    assert params["head"].dtype == convert.assemble.DTYPES["bf16"]


def test_write_accepts_jax_params_and_casts(tmp_path):
    params = jax.tree.map(jnp.asarray, random_params(TINY))
    convert.write_pth(params, tmp_path / "m.pth", dtype="bf16", layer0_v=False)
    state = torch.load(tmp_path / "m.pth", weights_only=True)
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    assert "blocks.0.att.v1" not in state and "blocks.1.att.v1" in state
    assert state["blocks.1.att.x_r"].shape == (1, 1, TINY.n_embd)
    assert state["blocks.1.ffn.key.weight"].shape == (TINY.dim_ffn, TINY.n_embd)
    with pytest.raises(convert.UnsupportedFormatError, match=r"\.pth"):
        convert.write_pth(params, tmp_path / "m.bin")


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): a stand-in for arbitrary code execution."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"blocks.0.att.r_k": _RunsCode(str(marker))}, path)
    # The file is really malicious: a plain unpickler runs the payload.
    with zipfile.ZipFile(path) as z:
        pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("data.pkl"))))
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(convert.UnsafeCheckpointError, match="other than tensors"):
        convert.read_pth(path)
    with pytest.raises(convert.UnsafeCheckpointError):
        convert.convert(path, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p, good: p.write_bytes(b""), convert.CorruptCheckpointError, "empty file"),
        (lambda p, good: p.write_bytes(good[: len(good) // 2]), convert.CorruptCheckpointError,
         "truncated or corrupt"),
        (lambda p, good: p.write_bytes(b"\x00" * 4096), convert.CorruptCheckpointError,
         "not a torch zip archive"),
        (lambda p, good: torch.save({"emb.weight": torch.zeros(2)}, p,
                                    _use_new_zipfile_serialization=False),
         convert.CorruptCheckpointError, "not a torch zip archive"),
        (lambda p, good: torch.save({"state_dict": {"emb.weight": torch.zeros(2)}}, p),
         convert.UnsupportedFormatError, "flat state dict"),
        (lambda p, good: torch.save(torch.zeros(2), p), convert.UnsupportedFormatError,
         "expected a state dict"),
    ],
    ids=["empty", "truncated", "garbage", "legacy-pickle", "training-checkpoint", "bare-tensor"],
)
def test_bad_files_give_specific_errors_and_no_output(tmp_path, official, make, error, message):
    path = tmp_path / "bad.pth"
    make(path, official.read_bytes())
    with pytest.raises(error, match=message):
        convert.convert(path, tmp_path / "out" / "ckpt")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _edited(tmp_path: Path, edit) -> Path:
    state = official_state_dict(TINY, torch.float32, layer0_v=False)
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


def test_nan_is_refused_naming_the_tensor(tmp_path):
    def edit(state):
        state["blocks.1.att.w2"][0, 3] = float("nan")

    with pytest.raises(convert.NonFiniteError, match=r"blocks\.1\.att\.w2 holds 1 NaN"):
        convert.read_pth(_edited(tmp_path, edit))


def test_inconsistent_head_shape_is_refused(tmp_path):
    def edit(state):
        state["blocks.1.att.r_k"] = torch.zeros(1, 64)

    with pytest.raises(convert.ShapeMismatchError, match=r"blocks\.1\.att\.r_k has shape \(1, 6"):
        convert.read_pth(_edited(tmp_path, edit))


def test_width_not_a_multiple_of_head_size_is_refused(tmp_path):
    def edit(state):
        for k in [k for k in state if k.endswith("att.r_k")]:
            state[k] = torch.zeros(2, 60)

    with pytest.raises(convert.ShapeMismatchError, match="not a multiple of head_size=60"):
        convert.read_pth(_edited(tmp_path, edit))


def test_rwkv6_pth_is_refused(tmp_path):
    path = tmp_path / "v6.pth"
    torch.save({"emb.weight": torch.zeros(4, 4), "blocks.0.att.time_maa_x": torch.zeros(1, 1, 4),
                "blocks.0.att.time_faaaa": torch.zeros(1, 4)}, path)
    with pytest.raises(convert.NotX070Error, match=r"RWKV-6 \(x060\).*time_maa_x"):
        convert.read_pth(path)


def test_missing_layer_is_named(tmp_path):
    state = official_state_dict(Config.default(3, 128, 512), torch.float32, layer0_v=False)
    for k in [k for k in state if k.startswith("blocks.1.")]:
        del state[k]
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(convert.KeyMismatchError, match=r"BlinkDL names of a 3-layer model\): missing keys") as e:
        convert.read_pth(tmp_path / "edited.pth")
    assert "blocks.1.att.r_k" in e.value.missing and not e.value.unexpected


def test_a_stray_block_key_is_one_unexpected_key(tmp_path):
    def edit(state):
        state["blocks.7.att.r_k"] = state["blocks.1.att.r_k"].clone()

    with pytest.raises(convert.KeyMismatchError) as e:
        convert.read_pth(_edited(tmp_path, edit))
    assert e.value.missing == [] and e.value.unexpected == ["blocks.7.att.r_k"]
    assert "BlinkDL names of a 2-layer model): unexpected keys: blocks.7.att.r_k" in str(e.value)
