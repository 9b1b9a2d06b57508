"""Sharded against unsharded on 8 CPU devices; run by tests/test_mesh.py in a subprocess (the
device count is fixed when JAX starts): `python tests/mesh_checks.py DATAxMODEL ...`.

Each check asserts; the script exits non-zero with the traceback of the first that fails.
"""

import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import rime  # noqa: E402
import rwkv_jax  # noqa: E402
from rime.__main__ import main as rime_main  # noqa: E402
from rime.eval import protocol, rows  # noqa: E402
from rime.eval.evaluate import Evaluator  # noqa: E402
from rime.eval.kernels import Layout  # noqa: E402
from rime.eval.protocol import Spec  # noqa: E402
from rwkv_jax import Config, mesh  # noqa: E402
from rwkv_jax.batch import Reader  # noqa: E402
from rwkv_jax.bundle import Model  # noqa: E402
from rwkv_jax.params import perturbed_params  # noqa: E402
from rwkv_jax.tokenizer import subset_vocab, world_tokenizer  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

# fp32 throughout; a split contraction sums in another order, so logits differ in the last bits
RTOL, ATOL = 1e-4, 1e-5
CASE = "test-001"
# The intended layout, restated from the design (issue 21): the axis each matrix splits on.
SPLIT_AXIS = {
    "emb": 0, "head": 1,
    **{f"blocks.att.{n}": 2 for n in ("receptance", "key", "value", "w2", "a2", "v2", "g2")},
    "blocks.att.output": 1, "blocks.ffn.key": 2, "blocks.ffn.value": 1,
}


def model_for(case) -> Model:
    """A random 2-layer model with 4 heads whose vocab covers the case's texts, padded to a
    multiple of 8 (as released models pad theirs)."""
    texts = [protocol.recipient_text(case)] + [protocol.question_prompt(q) for q in protocol.questions(case)]
    texts += [protocol.filler_text(case, mode, 0, 1) for mode in rime.FILLER_MODES]
    tokenizer, _ = subset_vocab(world_tokenizer(), texts, "mesh-test")
    cfg = Config.default(2, 256, -(-tokenizer.vocab_size // 8) * 8)
    return Model(params=perturbed_params(cfg, seed=5), cfg=cfg, tokenizer=tokenizer)


def name(path) -> str:
    return ".".join(str(k.key) for k in path)


def check_shards(params, cfg, size: int) -> None:
    """Every parameter's shards have the intended shape; a device holds about 1/size of the bytes."""
    local = 0
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        want = list(x.shape)
        if name(path) in SPLIT_AXIS:
            want[SPLIT_AXIS[name(path)]] //= size
        for shard in x.addressable_shards:
            assert shard.data.shape == tuple(want), (name(path), shard.data.shape, want)
        local += x.addressable_shards[0].data.nbytes
    total = sum(x.nbytes for x in jax.tree.leaves(params))
    assert total / size <= local <= 1.15 * total / size, (local, total)


TEXTS = ["Mika lives in Oslo.", "Hello", "Assistant: the answer is blue, I think", "x"] * 2
SPEC = Spec.build(fillers=(0, 1), max_new_tokens=4)


def decode_inputs(cfg: Config, B: int = 8):
    states = jax.tree.map(lambda x: np.random.default_rng(0).standard_normal(x.shape, np.float32),
                          rwkv_jax.State.zeros(cfg, (B,)))
    return np.arange(B, dtype=np.int32) + 3, states


steps = jax.jit(jax.vmap(rwkv_jax.step, in_axes=(None, None, 0, 0)), static_argnums=1)


def run_rows(model: Model, case, **where) -> list[dict]:
    return [r for group in Evaluator(model, SPEC, batch_size=8, **where).run([case])
            for _, case_rows in group for r in case_rows]


def unsharded(model: Model, case) -> dict:
    """The expectations: every computation on one device."""
    zeros = rwkv_jax.State.zeros(model.cfg)
    return {"forward": Reader(model.params, model.cfg).read_texts(model.tokenizer, TEXTS, zeros),
            "decode": steps(model.params, model.cfg, *decode_inputs(model.cfg)),
            "rows": run_rows(model, case, devices=jax.devices()[:1])}


def assert_close(got, want) -> None:
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


def check_forward(model: Model, grid, size: int, want) -> None:
    reader = Reader(model.params, model.cfg, Layout(8, mesh=grid))
    check_shards(reader.params, model.cfg, size)
    assert_close(reader.read_texts(model.tokenizer, TEXTS, rwkv_jax.State.zeros(model.cfg)), want)


def check_decode(model: Model, grid, want) -> None:
    """Batched decode steps: the same logits and states, and the wkv state stays split by heads."""
    tokens, states = decode_inputs(model.cfg)
    got = steps(mesh.shard_params(model.params, model.cfg, grid), model.cfg,
                jax.device_put(tokens, NamedSharding(grid, P(mesh.DATA))),
                mesh.place(states, mesh.state_shardings(grid)))
    assert_close(got, want)
    wkv = got[1].wkv.sharding
    assert wkv.is_equivalent_to(NamedSharding(grid, mesh.state_specs().wkv), 5), wkv


def check_rows(model: Model, case, grid, want) -> None:
    """A RIME mini-run: every row (generation, scores) and first-token probability agree."""
    assert_same_rows(run_rows(model, case, mesh=grid), want)


def assert_same_rows(got, want) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert {k: v for k, v in a.items() if k not in ("p_new", "p_old")} == \
            {k: v for k, v in b.items() if k not in ("p_new", "p_old")}
        np.testing.assert_allclose([a["p_new"], a["p_old"]], [b["p_new"], b["p_old"]], rtol=RTOL, atol=1e-7)


def check_load(model: Model, grid, size: int, path) -> None:
    """`load(sharding=mesh)` restores every leaf straight into its shards, with the saved values."""
    params = rwkv_jax.load(path, sharding=grid).params
    check_shards(params, model.cfg, size)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(model.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def check_cli(case, shape: str, path, folder: str, want) -> None:
    """`python -m rime run --mesh data=D,model=M` writes the rows of one device."""
    cases = os.path.join(folder, "cases.jsonl")
    rime.write_jsonl([case], cases)
    data, size = shape.split("x")
    out = os.path.join(folder, "run")
    assert rime_main(["run", "--model", str(path), "--cases", cases, "--filler", "0,1", "--max-new-tokens", "4",
                      "--batch-size", "8", "--mesh", f"data={data},model={size}", "--out", out]) == 0
    assert_same_rows(rows.read_rows(out), want)


def check_errors() -> None:
    """A model axis that does not divide the heads, the vocabulary or the FFN width is named."""
    grid = mesh.make_mesh(2, 3, jax.devices()[:6])
    for cfg, what in ((Config.default(1, 256, 516, dim_ffn=768), "n_head"),
                      (Config.default(1, 192, 512, dim_ffn=768), "vocab_size"),
                      (Config.default(1, 192, 516, dim_ffn=760), "dim_ffn")):
        try:
            mesh.param_shardings(cfg, grid)
        except ValueError as err:
            assert "'model' axis of size 3" in str(err) and what in str(err), err
        else:
            raise AssertionError(f"{what}: no error")


def main(shapes: list[str]) -> None:
    case = next(c for c in rime.load("test") if c.id == CASE)
    model = model_for(case)
    want = unsharded(model, case)
    for shape in shapes:
        data, size = map(int, shape.split("x"))
        grid = mesh.make_mesh(data, size)
        check_forward(model, grid, size, want["forward"])
        check_decode(model, grid, want["decode"])
        check_rows(model, case, grid, want["rows"])
        with tempfile.TemporaryDirectory() as folder:
            path = rwkv_jax.save(os.path.join(folder, "model"), model.params, model.cfg, model.tokenizer)
            check_load(model, grid, size, path)
            if size > 1:
                check_cli(case, shape, path, folder, want["rows"])
        print(f"{shape}: ok", flush=True)
    check_errors()
    print("errors: ok")


if __name__ == "__main__":
    main(sys.argv[1:])
