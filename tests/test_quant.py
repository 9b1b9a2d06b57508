"""Weight-only quantized params: the format, the native products against XLA's, the model on
quantized params against the model on the same weights in float32, and saving and converting."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import convert
import rwkv_jax
from rwkv_jax import Config, State, forward, kernels, quant
from rwkv_jax.checkpoint import load, save
from rwkv_jax.decode import decode_params, decode_step
from rwkv_jax.mesh import make_mesh, shard_params
from rwkv_jax.params import check_params, perturbed_params
from rwkv_jax.state import split_state

DTYPES = ["bfloat16", "int8"]


@pytest.fixture(scope="module", params=DTYPES)
def quantized(request, tiny):
    cfg, params = tiny
    return request.param, quant.quantize(params, request.param)


def test_quantize_narrows_the_large_matrices_only(tiny):
    cfg, params = tiny
    q = quant.quantize(params, "int8")
    check_params(q, cfg)  # a Narrow counts as the matrix it stands for
    att = q["blocks"]["att"]
    for name in ("receptance", "key", "value", "output"):
        assert quant.is_narrow(att[name]) and att[name].rows.dtype == jnp.int8
    assert quant.is_narrow(q["head"]) and quant.is_narrow(q["emb"]) and not q["emb"].transposed
    for name in ("w1", "a1", "x_r", "r_k"):  # LoRAs (rank < 128) and vectors stay as they are
        assert not quant.is_narrow(att[name]) and att[name] is params["blocks"]["att"][name]
    assert quant.narrow_dtype(q) == "int8" and quant.narrow_dtype(params) is None
    with pytest.raises(ValueError, match="quantized already"):
        quant.quantize(q, "int8")
    with pytest.raises(ValueError, match="dtype must be one of"):
        quant.quantize(params, "int4")


def test_bfloat16_rows_are_held_as_their_bits_and_stand_for_bfloat16(tiny):
    _, params = tiny
    w = np.asarray(params["blocks"]["ffn"]["key"])  # [L, D, F]
    narrow = quant.quantize(params, "bfloat16")["blocks"]["ffn"]["key"]
    assert narrow.rows.dtype == jnp.uint16 and narrow.dtype == jnp.bfloat16
    assert narrow.nbytes == w.nbytes // 2 + w[..., 0, :].nbytes  # the rows at half width, one scale per output
    np.testing.assert_array_equal(narrow.dense(), w.astype(jnp.bfloat16).astype(np.float32))
    as_given = narrow.replace(rows=jax.lax.bitcast_convert_type(narrow.rows, jnp.bfloat16))  # rows given as bfloat16
    np.testing.assert_array_equal(as_given.dense(), narrow.dense())
    assert quant.loop_safe({"m": as_given})["m"].rows.dtype == jnp.uint16
    assert quant.stored({"m": narrow})["m"].rows.dtype == jnp.bfloat16
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, w.shape[-2])), jnp.float32)
    layer0 = lambda m: jax.tree.map(lambda a: a[0], m)
    np.testing.assert_array_equal(quant.linear(x, layer0(as_given)), quant.linear(x, layer0(narrow)))


def test_int8_rounds_each_entry_to_within_half_a_step_of_its_row(tiny):
    _, params = tiny
    w = np.asarray(params["blocks"]["ffn"]["key"])  # [L, D, F]
    narrow = quant.quantize(params, "int8")["blocks"]["ffn"]["key"]
    step = np.abs(w).max(axis=-2, keepdims=True) / 127  # one scale per output column
    assert narrow.dense().shape == w.shape
    assert np.all(np.abs(np.asarray(narrow.dense()) - w) <= step / 2 + 1e-7)
    assert np.asarray(narrow.rows).min() >= -127


def _random_narrow(rng, d: int, f: int, dtype: str) -> quant.Narrow:
    """A Narrow for a random [d, f] projection, of any size (quantize skips small matrices)."""
    return quant._narrow(rng.standard_normal((d, f)).astype(np.float32), dtype, transposed=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,d,f", [(1, 768, 3072), (3, 100, 257), (1, 16, 2048), (4, 64, 1)])
def test_native_product_matches_xla_on_the_same_weights(dtype, rows, d, f):
    assert kernels.available(), kernels.status()
    rng = np.random.default_rng(rows * d + f)
    narrow = _random_narrow(rng, d, f, dtype)
    x = jnp.asarray(rng.standard_normal((rows, d)), jnp.float32)
    native = jax.jit(quant.native_product)(x, narrow.rows, narrow.scale)
    want = np.asarray(x, np.float64) @ np.asarray(narrow.dense(), np.float64)
    np.testing.assert_allclose(np.asarray(native), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# rows: the few-row kernel (<= 16) and each block width of the many-row one (32, 48, 64 rows a
# block), each with a partial last block; d and f off the 16-lane and tile sizes
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,d,f", [(5, 100, 257), (16, 33, 130), (17, 768, 769), (33, 130, 1000),
                                      (64, 768, 768), (600, 333, 131), (200, 3072, 77)])
def test_many_row_product_matches_xla_on_the_same_widened_weights(dtype, rows, d, f):
    """Float32 accumulation in another order: within 1e-5 of the largest output."""
    assert kernels.available(), kernels.status()
    rng = np.random.default_rng(rows + d * f)
    narrow = _random_narrow(rng, d, f, dtype)
    x = jnp.asarray(rng.standard_normal((rows, d)), jnp.float32)
    native = np.asarray(jax.jit(quant.native_product)(x, narrow.rows, narrow.scale))
    want = np.asarray(jax.jit(lambda x, m: x @ m.T)(x, narrow.widened()))
    assert native.shape == want.shape == (rows, f)
    np.testing.assert_allclose(native, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_many_rows_with_leading_axes_are_rows():
    """A [B, T, D] input is B * T rows; each row's product is the same as alone."""
    rng = np.random.default_rng(0)
    narrow = _random_narrow(rng, 64, 200, "int8")
    x = jnp.asarray(rng.standard_normal((3, 40, 64)), jnp.float32)
    native = np.asarray(jax.jit(quant.native_product)(x, narrow.rows, narrow.scale))
    alone = np.asarray(jax.jit(quant.native_product)(x[1, 7], narrow.rows, narrow.scale))
    np.testing.assert_allclose(native[1, 7], alone, rtol=0, atol=1e-5 * np.abs(alone).max())
    np.testing.assert_allclose(native, np.asarray(x) @ np.asarray(narrow.dense()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length", [39, 100])
def test_forward_on_quantized_params_is_forward_on_their_float_values(quantized, tiny, length):
    """A prompt is many rows: its products run in the native kernel on a CPU, not XLA's dot."""
    dtype, q = quantized
    cfg, _ = tiny
    tokens = jnp.arange(1, length + 1) % cfg.vocab_size
    got, state = forward(q, cfg, tokens)
    want, want_state = forward(quant.dequantize(q), cfg, tokens)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(state.wkv, want_state.wkv, atol=1e-4)
    assert "rwkv_jax_product" in jax.jit(forward, static_argnames="cfg").lower(q, cfg, tokens).as_text()


def test_the_decode_step_reads_quantized_params_through_the_native_product(quantized, tiny):
    dtype, q = quantized
    cfg, _ = tiny
    _, state = forward(q, cfg, jnp.arange(1, 20))
    got, _ = decode_step(decode_params(q, cfg), cfg, jnp.asarray(7), split_state(state))
    want, _ = rwkv_jax.step(quant.dequantize(q), cfg, jnp.asarray(7), state)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert "rwkv_jax_product" in jax.jit(decode_step, static_argnames="cfg").lower(
        decode_params(q, cfg), cfg, jnp.asarray(7), split_state(state)).as_text()


def test_the_float32_decode_head_runs_in_the_native_product(tiny):
    """Float32 params keep XLA's dots in the layers; the decode loop's `[V, D]` head is the kernel's."""
    cfg, params = tiny
    _, state = forward(params, cfg, jnp.arange(1, 20))
    layout = decode_params(params, cfg)
    got, _ = decode_step(layout, cfg, jnp.asarray(7), split_state(state))
    want, _ = rwkv_jax.step(params, cfg, jnp.asarray(7), state)
    np.testing.assert_allclose(got, want, atol=1e-5)
    hlo = jax.jit(decode_step, static_argnames="cfg").lower(layout, cfg, jnp.asarray(7), split_state(state)).as_text()
    assert hlo.count("rwkv_jax_product_float32") == 1 and "rwkv_jax_product_int8" not in hlo


@pytest.mark.parametrize("batch", [3, 32])
def test_a_batch_of_steps_equals_each_step(quantized, tiny, batch):
    """A vmapped step is one product of `batch` rows (32: the many-row kernel)."""
    _, q = quantized
    cfg, _ = tiny
    states = jax.vmap(lambda t: forward(q, cfg, t)[1])(jnp.arange(1, 10 * batch + 1).reshape(batch, 10))
    tokens = jnp.arange(batch) * 7 % cfg.vocab_size
    batched = jax.jit(jax.vmap(lambda t, s: rwkv_jax.step(q, cfg, t, s)))
    batch_logits, _ = batched(tokens, states)
    assert "rwkv_jax_product" in batched.lower(tokens, states).as_text()
    for i in (0, batch - 1):
        one, _ = rwkv_jax.step(q, cfg, tokens[i], jax.tree.map(lambda a, i=i: a[i], states))
        np.testing.assert_allclose(batch_logits[i], one, atol=1e-5)


def test_int8_logits_stay_close_to_fp32_on_a_random_model():
    cfg = Config.default(2, 256, 1024)
    params = perturbed_params(cfg, scale=0.05)
    tokens = jnp.arange(1, 65)
    want, _ = forward(params, cfg, tokens)
    for dtype, bound in (("bfloat16", 0.02), ("int8", 0.05)):
        got, _ = forward(quant.quantize(params, dtype), cfg, tokens)
        assert float(jnp.abs(got - want).max()) < bound * float(jnp.abs(want).max()), dtype


def test_quantized_checkpoints_save_and_load_bit_for_bit(quantized, tiny, tmp_path):
    dtype, q = quantized
    cfg, _ = tiny
    save(tmp_path / "q", q, cfg, None)
    meta = json.loads((tmp_path / "q" / "meta.json").read_text())
    assert meta["quantized"] == dtype and meta["dtype"] == "float32"
    on_disk = ocp.PyTreeCheckpointer().metadata(tmp_path / "q" / "params").item_metadata.tree
    assert on_disk["head"]["rows"].dtype == jnp.dtype(dtype)  # bfloat16 files, whatever the rows are held as
    back = load(tmp_path / "q").params
    assert jax.tree.structure(back) == jax.tree.structure(q)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(q), strict=True))
    with pytest.raises(ValueError, match="load on one device"):
        load(tmp_path / "q", sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_a_damaged_quantized_field_is_named(tiny, tmp_path):
    cfg, params = tiny
    save(tmp_path / "q", quant.quantize(params, "int8"), cfg, None)
    meta = json.loads((tmp_path / "q" / "meta.json").read_text())
    (tmp_path / "q" / "meta.json").write_text(json.dumps({**meta, "quantized": "int3"}))
    with pytest.raises(ValueError, match="field 'quantized'"):
        load(tmp_path / "q")


@pytest.mark.parametrize(("flag", "dtype", "held"),
                         [("int8", "int8", jnp.int8), ("bf16-weights", "bfloat16", jnp.uint16)])
def test_convert_imports_an_official_checkpoint_quantized_and_exports_floats(tiny, tmp_path, flag, dtype, held):
    cfg, params = tiny
    pth = tmp_path / "model.pth"
    convert.write_pth(params, pth, dtype="float32")
    out = subprocess.run([sys.executable, "-m", "convert", str(pth), str(tmp_path / "q"), "--dtype", flag,
                          "--vocab", "none"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    model = rwkv_jax.load(tmp_path / "q")
    assert quant.narrow_dtype(model.params) == dtype
    expected = quant.quantize(params, dtype)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(expected)))
    back = convert.convert(tmp_path / "q", tmp_path / "back.pth")
    again = convert.load(back, vocab="none").params
    np.testing.assert_allclose(again["head"], quant.dequantize(expected)["head"], atol=1e-7)
    assert convert.load(pth, vocab="none", dtype=flag).params["head"].rows.dtype == held


def test_without_a_compiler_the_products_fall_back_to_xla(tmp_path):
    code = ("import jax.numpy as jnp, rwkv_jax; from rwkv_jax import kernels, quant, forward; "
            "from rwkv_jax.params import perturbed_params; cfg = rwkv_jax.Config.default(1, 128, 256); "
            "p = perturbed_params(cfg); q = quant.quantize(p, 'int8'); "
            "t = jnp.arange(1, 41); a = forward(q, cfg, t)[0]; b = forward(quant.dequantize(q), cfg, t)[0]; "
            "print(kernels.available(), kernels.status(), float(abs(a - b).max()))")
    env = {**os.environ, "CXX": "no-such-compiler", "RWKV_JAX_KERNEL_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    available, *status, err = out.stdout.split()
    assert available == "False" and "no C++ compiler" in " ".join(status) and float(err) < 1e-4


def test_state_of_quantized_params_is_float32(quantized, tiny):
    _, q = quantized
    cfg, _ = tiny
    logits, state = forward(q, cfg, jnp.arange(1, 5), State.zeros(cfg))
    assert logits.dtype == jnp.float32 and state.wkv.dtype == jnp.float32


def test_quantized_params_replicate_over_a_data_mesh(quantized, tiny):
    _, q = quantized
    cfg, _ = tiny
    placed = shard_params(q, cfg, make_mesh(1, 1))
    assert jax.tree.structure(placed) == jax.tree.structure(q)
    assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(placed))
