"""convert/ without torch: safetensors, the HF format, the key table's checks, the CLI."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest

import convert
import rwkv_jax
from convert import safetensors
from convert.__main__ import main
from rwkv_jax import Config, checkpoint
from rwkv_jax.params import param_shapes
from rwkv_jax.tokenizer import load_tokenizer

BF16 = np.dtype(ml_dtypes.bfloat16)
TINY = Config.default(n_layer=2, n_embd=128, vocab_size=512)  # conftest's `tiny`


def random_params(cfg: Config, seed: int = 0) -> dict:
    """Cheap random params of any shape (for tests of layout, not of model outputs)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: 0.1 * rng.standard_normal(shape, np.float32),
        param_shapes(cfg),
        is_leaf=lambda x: isinstance(x, tuple),
    )


def byte_vocab(path: Path) -> Path:
    """A vocab of the 256 single bytes (ids 1..256), small enough for the test models."""
    path.write_text("".join(f"{b + 1} {bytes([b])!r} 1\n" for b in range(256)))
    return path


def assert_params_equal(a: dict, b: dict) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    pairs = zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True)
    for (path, x), y in pairs:
        x, y, where = np.asarray(x), np.asarray(y), jax.tree_util.keystr(path)
        assert x.dtype == y.dtype and x.shape == y.shape, where
        assert np.array_equal(x.view(np.uint8), y.view(np.uint8)), where


def rewrite_safetensors(src: Path, dst: Path, edit) -> None:
    """Copies a safetensors file through `edit(dict name -> array)`, which may add or drop."""
    file = safetensors.SafetensorsFile(src)
    tensors = {k: np.array(file.array(k)) for k in file.keys()}
    edit(tensors)
    safetensors.write(dst, [_Tensor(k, v) for k, v in tensors.items()])


class _Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self.name, self.shape, self.dtype, self._array = name, array.shape, array.dtype, array

    def make(self) -> np.ndarray:
        return self._array


@pytest.fixture(scope="module")
def params(tiny) -> dict:
    assert tiny[0] == TINY
    return tiny[1]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, params) -> Path:
    return convert.write_hf(params, tmp_path_factory.mktemp("hf") / "model")


# --- safetensors -------------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_bytes_dtypes_and_metadata(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal(7).astype(BF16),
        "c": rng.standard_normal((2, 1, 4)).astype(np.float16),
        "d": np.arange(6, dtype=np.int64).reshape(2, 3),
        "e": np.zeros((0, 4), np.float32),
    }
    path = tmp_path / "x.safetensors"
    safetensors.write(path, [_Tensor(k, v) for k, v in arrays.items()], {"format": "pt"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0  # tensor data starts aligned
    assert json.loads(raw[8 : 8 + n])["b"]["dtype"] == "BF16"
    file = safetensors.SafetensorsFile(path)
    assert file.metadata == {"format": "pt"}
    assert file.keys() == list(arrays)
    for k, v in arrays.items():
        got = file.array(k)
        assert got.dtype == v.dtype and got.shape == v.shape
        assert np.array_equal(got.view(np.uint8), v.view(np.uint8))


def test_safetensors_truncated_file_is_reported_from_the_header(tmp_path):
    path = tmp_path / "x.safetensors"
    safetensors.write(path, [_Tensor("w", np.ones((64, 64), np.float32))])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(convert.CorruptCheckpointError, match="truncated: w ends at"):
        safetensors.SafetensorsFile(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"\x01\x02", "truncated"),
        (struct.pack("<Q", 10**12) + b"{}", "header length"),
        (struct.pack("<Q", 4) + b"{ab}", "unreadable safetensors header"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_safetensors_corrupt_files_are_refused(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(convert.CorruptCheckpointError, match=message):
        safetensors.SafetensorsFile(path)


# --- HF format ---------------------------------------------------------------------------------


def test_hf_export_uses_hf_names_and_layouts(hf_dir, params):
    file = safetensors.SafetensorsFile(hf_dir / "model.safetensors")
    D, Dw = TINY.n_embd, TINY.d_decay
    assert file.shape("model.layers.1.attn.w_lora.lora.0.weight") == (Dw, D)
    assert file.shape("model.layers.1.attn.r_proj.weight") == (D, D)
    assert file.shape("lm_head.weight") == (TINY.vocab_size, D)
    assert file.shape("model.layers.0.attn.x_r") == (1, 1, D)
    assert not [k for k in file.keys() if k.startswith("model.layers.0.attn.v_lora")]
    np.testing.assert_array_equal(
        file.array("model.layers.1.attn.w_lora.lora.0.weight"),
        np.asarray(params["blocks"]["att"]["w1"][1]).T,
    )
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["intermediate_size"] == TINY.dim_ffn
    assert config["v_low_rank_dim"] == TINY.d_mv


def test_hf_import_restores_params_with_zero_layer0_v(hf_dir, params):
    got, cfg, meta = convert.read_hf(hf_dir)
    assert cfg == TINY
    assert (meta.container, meta.naming) == ("safetensors", "fla") and meta.dtype == "float32" and not meta.layer0_v
    expected = jax.tree.map(np.array, params)
    for name in ("v0", "v1", "v2"):
        expected["blocks"]["att"][name][0] = 0
    assert_params_equal(got, expected)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("max_shard_bytes", [None, 200_000])
def test_hf_round_trip_is_bit_identical(tmp_path, params, dtype, max_shard_bytes):
    first = convert.write_hf(params, tmp_path / "a", dtype=dtype, max_shard_bytes=max_shard_bytes)
    sharded = (first / "model.safetensors.index.json").exists()
    assert sharded == (max_shard_bytes is not None)
    got, _, meta = convert.read_hf(first)
    assert meta.dtype == np.dtype(convert.assemble.DTYPES[dtype]).name
    second = convert.write_hf(got, tmp_path / "b", max_shard_bytes=max_shard_bytes)
    for shard in sorted(first.glob("*.safetensors")):
        assert shard.read_bytes() == (second / shard.name).read_bytes()


def test_hf_single_file_and_index_json_are_accepted_as_paths(tmp_path, params, hf_dir):
    sharded = convert.write_hf(params, tmp_path / "s", max_shard_bytes=200_000)
    whole, _, _ = convert.read_hf(hf_dir / "model.safetensors")
    from_index, _, _ = convert.read_hf(sharded / "model.safetensors.index.json")
    assert_params_equal(whole, from_index)


def test_hf_sharded_with_missing_shard_is_refused(tmp_path, params):
    sharded = convert.write_hf(params, tmp_path / "s", max_shard_bytes=200_000)
    next(sharded.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(convert.CorruptCheckpointError, match="missing"):
        convert.read_hf(sharded)


def test_legacy_fused_token_shift_is_split_into_six_rows(tmp_path, hf_dir):
    names = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")

    def fuse(tensors):
        for i in range(TINY.n_layer):
            prefix = f"model.layers.{i}.attn."
            tensors[prefix + "x_x"] = np.concatenate([tensors.pop(prefix + x)[0] for x in names])

    legacy = tmp_path / "legacy.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", legacy, fuse)
    assert_params_equal(convert.read_hf(legacy)[0], convert.read_hf(hf_dir)[0])


def test_unknown_and_missing_keys_are_named(tmp_path, hf_dir):
    def edit(tensors):
        del tensors["model.layers.1.attn.k_a"]
        tensors["model.layers.0.attn.extra"] = np.zeros(3, np.float32)

    path = tmp_path / "bad.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", path, edit)
    with pytest.raises(convert.KeyMismatchError) as e:
        convert.read_hf(path)
    assert e.value.missing == ["model.layers.1.attn.k_a"]
    assert e.value.unexpected == ["model.layers.0.attn.extra"]
    assert "model.layers.1.attn.k_a" in str(e.value)


def test_partial_layer0_value_lora_is_a_missing_key(tmp_path, hf_dir):
    def edit(tensors):
        tensors["model.layers.0.attn.v_lora.lora.2.bias"] = np.zeros(TINY.n_embd, np.float32)

    path = tmp_path / "bad.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", path, edit)
    with pytest.raises(convert.KeyMismatchError) as e:
        convert.read_hf(path)
    assert e.value.missing == [
        "model.layers.0.attn.v_lora.lora.0.weight",
        "model.layers.0.attn.v_lora.lora.2.weight",
    ]


@pytest.mark.parametrize(
    "keys, detected",
    [
        (["blocks.0.att.time_maa_x", "blocks.0.att.time_faaaa"], "RWKV-6"),
        (["blocks.0.att.time_faaaa", "blocks.0.att.time_mix_k"], "RWKV-5"),
        (["blocks.0.att.time_first", "blocks.0.att.time_decay"], "RWKV-4"),
        (["rwkv.blocks.0.attention.time_first"], "RWKV-4"),
    ],
)
def test_other_rwkv_generations_are_refused_with_what_was_detected(tmp_path, keys, detected):
    path = tmp_path / "old.safetensors"
    safetensors.write(path, [_Tensor(k, np.zeros(4, np.float32)) for k in keys])
    with pytest.raises(convert.NotX070Error, match=f"detected {detected}.*{keys[0]}"):
        convert.read_hf(path)


def test_deep_embed_variant_is_refused(tmp_path, hf_dir):
    def edit(tensors):
        tensors["model.layers.0.ffn.s_emb.weight"] = np.zeros((4, 4), np.float32)

    path = tmp_path / "de.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", path, edit)
    with pytest.raises(convert.NotX070Error, match="DeepEmbed.*s_emb"):
        convert.read_hf(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_refused_naming_the_tensor(tmp_path, hf_dir, bad):
    def edit(tensors):
        tensors["model.layers.1.ffn.key.weight"][3, 5] = bad

    path = tmp_path / "nan.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", path, edit)
    with pytest.raises(convert.NonFiniteError, match=r"model\.layers\.1\.ffn\.key\.weight holds 1"):
        convert.read_hf(path)


def test_inconsistent_shapes_are_refused_naming_the_tensor(tmp_path, hf_dir):
    def edit(tensors):
        tensors["model.layers.1.attn.k_k"] = np.zeros(TINY.n_embd - 1, np.float32)
        tensors["model.layers.0.ffn.value.weight"] = np.zeros((TINY.n_embd, 8), np.float32)

    path = tmp_path / "shape.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", path, edit)
    with pytest.raises(convert.ShapeMismatchError) as e:
        convert.read_hf(path)
    assert "model.layers.1.attn.k_k has shape (127,)" in str(e.value)
    assert "model.layers.0.ffn.value.weight has shape (128, 8)" in str(e.value)


def test_integer_tensors_are_refused(tmp_path, hf_dir):
    def edit(tensors):
        tensors["model.norm.bias"] = np.zeros(TINY.n_embd, np.int32)

    path = tmp_path / "int.safetensors"
    rewrite_safetensors(hf_dir / "model.safetensors", path, edit)
    with pytest.raises(convert.DtypeError, match="model.norm.bias has dtype int32"):
        convert.read_hf(path)


@pytest.mark.parametrize(
    "cfg",
    [
        # one head, vocab not a multiple of 64, F = 3.5 D rounded down to a multiple of 32
        Config(n_layer=2, n_embd=64, head_size=64, vocab_size=1001, dim_ffn=224,
               d_decay=32, d_aaa=48, d_mv=16, d_gate=40),
        Config(n_layer=3, n_embd=192, head_size=64, vocab_size=257, dim_ffn=672,
               d_decay=64, d_aaa=32, d_mv=32, d_gate=96),  # 672 = int(3.5 * 192) // 32 * 32
    ],
)
def test_config_is_inferred_from_odd_shapes(tmp_path, cfg):
    params = random_params(cfg)
    got, inferred, _ = convert.read_hf(convert.write_hf(params, tmp_path / "m"))
    assert inferred == cfg
    assert jax.tree.map(np.shape, got) == jax.tree.map(np.shape, params)


def test_one_layer_model_without_value_lora_gets_a_default_rank(tmp_path):
    cfg = Config(n_layer=1, n_embd=64, head_size=64, vocab_size=320, dim_ffn=256,
                 d_decay=32, d_aaa=32, d_mv=48, d_gate=32)
    _, inferred, _ = convert.read_hf(convert.write_hf(random_params(cfg), tmp_path / "m"))
    assert inferred.d_mv == 32  # not in the file: the official suggestion for D = 64


# --- namings: detected from the tensor names, written in any container --------------------------


def expected_after(params: dict, naming: str) -> dict:
    """What reading back an export in `naming` gives: flash-linear-attention drops layer 0's
    unused v LoRA, which then reads as zeros."""
    expected = jax.tree.map(np.array, params)
    if naming == "fla":
        for name in ("v0", "v1", "v2"):
            expected["blocks"]["att"][name][0] = 0
    return expected


def export(params: dict, tmp_path: Path, naming: str, container: str) -> Path:
    if container == "file":
        return convert.write_safetensors(params, tmp_path / f"{naming}.safetensors", naming=naming)
    shard = 200_000 if container == "sharded" else None
    return convert.write_hf(params, tmp_path / naming, naming=naming, max_shard_bytes=shard)


@pytest.mark.parametrize("container", ["file", "folder", "sharded"])
@pytest.mark.parametrize("naming", ["blink", "fla", "transformers"])
def test_every_naming_round_trips_through_every_safetensors_container(tmp_path, params, naming, container):
    first = export(params, tmp_path / "a", naming, container)
    got, cfg, meta = convert.read_hf(first)
    assert cfg == TINY and (meta.container, meta.naming) == ("safetensors", naming)
    assert_params_equal(got, expected_after(params, naming))
    second = export(got, tmp_path / "b", naming, container)
    files = {f.name: f.read_bytes() for f in ([first] if first.is_file() else first.iterdir())}
    assert files == {f.name: f.read_bytes() for f in ([second] if second.is_file() else second.iterdir())}
    assert (len(files) > 3) == (container == "sharded")


def test_blink_names_in_a_safetensors_file_are_the_official_names(tmp_path, params):
    path = convert.write_safetensors(params, tmp_path / "m.safetensors", naming="blink")
    file = safetensors.SafetensorsFile(path)
    assert file.shape("blocks.1.att.w1") == (TINY.n_embd, TINY.d_decay)  # x @ w1, not nn.Linear
    assert file.shape("blocks.0.att.v1") == (TINY.n_embd, TINY.d_mv)  # layer 0's v LoRA kept
    assert file.shape("blocks.1.ffn.key.weight") == (TINY.dim_ffn, TINY.n_embd)
    assert {"emb.weight", "head.weight", "blocks.0.ln0.bias"} <= set(file.keys())


def test_transformers_names_are_blink_names_under_the_rwkv7_prefix(tmp_path, params):
    folder = convert.write_hf(params, tmp_path / "tf", naming="transformers")
    keys = set(safetensors.SafetensorsFile(folder / "model.safetensors").keys())
    per_layer = 33  # every BlinkDL layer tensor, layer 0's v LoRA included (798 = 6 + 33 * 24)
    assert len(keys) == 6 + per_layer * TINY.n_layer
    assert {"rwkv7.emb.weight", "rwkv7.blocks.0.ln0.weight", "rwkv7.blocks.0.att.v1",
            "rwkv7.blocks.1.att.r_k", "rwkv7.ln_out.bias", "head.weight"} <= keys
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Rwkv7ForCausalLM"] and config["num_heads"] == TINY.n_head
    assert config["intermediate_size"] == TINY.dim_ffn and config["v_low_rank_dim"] == TINY.d_mv
    assert not (convert.write_hf(params, tmp_path / "bl", naming="blink") / "config.json").exists()


def test_names_that_fit_no_naming_are_shown_against_every_table(tmp_path, params):
    blink = convert.write_safetensors(params, tmp_path / "blink.safetensors", naming="blink")

    def edit(tensors):
        tensors["model.norm.weight"] = tensors.pop("ln_out.weight")  # one FLA name among BlinkDL's

    path = tmp_path / "mixed.safetensors"
    rewrite_safetensors(blink, path, edit)
    with pytest.raises(convert.KeyMismatchError) as e:
        convert.read_hf(path)
    assert e.value.naming == "blink"
    assert e.value.missing == ["ln_out.weight"] and e.value.unexpected == ["model.norm.weight"]
    message = str(e.value)
    assert "BlinkDL names: 2 unmatched (not in it: model.norm.weight; missing: ln_out.weight)" in message
    assert "flash-linear-attention names: " in message and "not in it: blocks.0." in message
    assert "transformers names: " in message and "missing: rwkv7." in message


def test_export_naming_is_chosen_on_the_command_line(tmp_path, hf_dir):
    ckpt = convert.convert(hf_dir, tmp_path / "ckpt", vocab=byte_vocab(tmp_path / "v.txt"))
    out = tmp_path / "m.safetensors"
    assert main([str(ckpt), str(out), "--naming", "blink"]) == 0
    assert "blocks.0.att.w1" in safetensors.SafetensorsFile(out).keys()
    assert main([str(ckpt), str(tmp_path / "d"), "--naming", "transformers"]) == 0
    assert "rwkv7.emb.weight" in safetensors.SafetensorsFile(tmp_path / "d" / "model.safetensors").keys()
    with pytest.raises(ValueError, match="naming='blink' applies to exports"):
        convert.convert(hf_dir, tmp_path / "x", naming="blink")


# --- convert.load of an official checkpoint ---------------------------------------------------------


@pytest.mark.parametrize("form", ["file", "index", "folder"])
def test_load_reads_an_official_checkpoint_in_memory_like_the_converter(tmp_path, params, form):
    folder = convert.write_hf(params, tmp_path / "hf", naming="blink", max_shard_bytes=200_000)
    if form == "file":
        src = convert.write_safetensors(params, tmp_path / "m.safetensors", naming="fla")
    else:
        src = folder / "model.safetensors.index.json" if form == "index" else folder
    before = sorted(p.name for p in tmp_path.rglob("*"))
    model = convert.load(src, vocab="bytes", dtype="bf16")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert model.cfg == TINY and model.tokenizer.encode("hi") == [104, 105]
    expected, _, _ = convert.read_hf(src, dtype="bf16")
    assert_params_equal(jax.tree.map(np.asarray, model.params), expected)


def test_load_of_an_official_checkpoint_raises_the_converter_errors(tmp_path, hf_dir):
    with pytest.raises(convert.VocabMismatchError, match="512 rows"):
        convert.load(hf_dir)  # the World vocab by default, as in convert
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((hf_dir / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(convert.CorruptCheckpointError, match="truncated"):
        convert.load(bad, vocab="none")
    with pytest.raises(ValueError, match="has another shape: n_layer: checkpoint 2 != expected 3"):
        convert.load(hf_dir, vocab="none", expect=Config.default(3, 128, 512))
    with pytest.raises(FileNotFoundError, match="not an rwkv_jax checkpoint .*loads with convert.load"):
        rwkv_jax.load(hf_dir)  # rwkv_jax itself opens its own checkpoints only
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not an rwkv_jax checkpoint .*nor a Hugging Face checkpoint"):
        convert.load(tmp_path / "empty")


def test_load_casts_an_rwkv_jax_checkpoint_and_refuses_a_vocab_for_it(tmp_path, params):
    ckpt = checkpoint.save(tmp_path / "ckpt", params, TINY, "none")
    model = convert.load(ckpt, dtype="bf16")
    assert {x.dtype for x in jax.tree.leaves(model.params)} == {BF16} and model.tokenizer is None
    with pytest.raises(ValueError, match="records its vocab"):
        convert.load(ckpt, vocab="bytes")


# --- convert() and the CLI ---------------------------------------------------------------------


def test_cli_converts_hf_to_a_loadable_checkpoint_with_progress(tmp_path, hf_dir, capsys):
    vocab = byte_vocab(tmp_path / "vocab.txt")
    out = tmp_path / "ckpt"
    assert main([str(hf_dir), str(out), "--vocab", str(vocab), "--dtype", "bf16"]) == 0
    assert "tensor" in capsys.readouterr().err  # the progress bar
    model = checkpoint.load(out)
    assert model.cfg == TINY
    assert model.tokenizer.encode("hi") == [ord("h") + 1, ord("i") + 1]
    expected, _, _ = convert.read_hf(hf_dir, dtype="bf16")
    assert_params_equal(jax.tree.map(np.asarray, model.params), expected)


def test_export_from_checkpoint_to_hf_round_trips(tmp_path, hf_dir):
    vocab = byte_vocab(tmp_path / "vocab.txt")
    ckpt = convert.convert(hf_dir, tmp_path / "ckpt", vocab=vocab)
    back = convert.convert(ckpt, tmp_path / "hf")
    assert (back / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()


def test_byte_level_model_converts_with_the_built_in_bytes_vocab(tmp_path):
    cfg = Config.default(1, 64, 256)  # rwkv.cpp's byte-level test model: vocab 256, id = byte
    src = convert.write_hf(random_params(cfg), tmp_path / "hf")
    assert main([str(src), str(tmp_path / "ckpt"), "--vocab", "bytes"]) == 0
    assert json.loads((tmp_path / "ckpt" / "meta.json").read_text())["vocab"] == "bytes"
    assert not (tmp_path / "ckpt" / "vocab.txt").exists()
    assert checkpoint.load(tmp_path / "ckpt").tokenizer.encode("hi") == [104, 105]


def test_any_vocab_size_converts_with_vocab_none_to_a_model_without_tokenizer(tmp_path):
    cfg = Config.default(1, 64, 1001)
    src = convert.write_hf(random_params(cfg), tmp_path / "hf")
    model = checkpoint.load(convert.convert(src, tmp_path / "ckpt", vocab="none"))
    assert model.tokenizer is None and model.cfg == cfg
    with pytest.raises(ValueError, match="needs text, but this model has no tokenizer"):
        model.text_tokenizer("this")


def test_a_vocab_file_named_like_a_built_in_one_is_kept(tmp_path, params):
    vocab = byte_vocab(tmp_path / "bytes.txt")  # ids 1..256 = byte + 1: not the built-in `bytes`
    tok = load_tokenizer(vocab)
    assert tok.name == "bytes"
    loaded = checkpoint.load(checkpoint.save(tmp_path / "ckpt", params, TINY, tok))
    assert loaded.tokenizer.encode("hi") == [105, 106]


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path, hf_dir):
    with pytest.raises(convert.VocabMismatchError, match="512 rows.*or the vocab 'bytes'"):
        convert.convert(hf_dir, tmp_path / "ckpt")  # the World vocab needs 65530 rows
    assert not (tmp_path / "ckpt").exists()


def test_failed_conversion_leaves_no_output(tmp_path, hf_dir, capsys):
    bad = tmp_path / "in" / "model.safetensors"
    bad.parent.mkdir()
    bad.write_bytes((hf_dir / "model.safetensors").read_bytes()[:5000])
    out = tmp_path / "out" / "ckpt"
    out.parent.mkdir()
    assert main([str(bad), str(out)]) == 1
    assert "truncated" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("name", ["model.bin", "model.pt", "model.txt", "model"])
def test_unknown_extensions_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"x" * 64)
    with pytest.raises(convert.UnsupportedFormatError, match="unknown extension"):
        convert.convert(path, tmp_path / "out")


def test_existing_output_is_kept_unless_overwrite(tmp_path, hf_dir):
    out = tmp_path / "ckpt"
    out.mkdir()
    with pytest.raises(FileExistsError):
        convert.convert(hf_dir, out, vocab=byte_vocab(tmp_path / "v.txt"))


def test_hf_conversion_works_without_torch(tmp_path, hf_dir):
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import convert\n"
        f"params, cfg, meta = convert.read_hf({str(hf_dir)!r})\n"
        f"convert.write_hf(params, {str(tmp_path / 'out')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        hf_dir / "model.safetensors"
    ).read_bytes()
