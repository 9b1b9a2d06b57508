"""The ("data", "model") mesh: sharded runs equal unsharded ones on 8 CPU devices (in a subprocess,
since the device count is fixed when JAX starts), and the mesh's arguments are checked."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from rime.__main__ import main
from rwkv_jax import Config, make_mesh, param_specs, parse_mesh
from rwkv_jax.mesh import MODEL

ROOT = Path(__file__).resolve().parent.parent


def test_sharded_logits_states_rows_and_cli_runs_equal_unsharded_on_2x4_and_8x1_meshes():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "mesh_checks.py"), "2x4", "8x1"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert [line for line in done.stdout.splitlines() if line.endswith(": ok")] == ["2x4: ok", "8x1: ok", "errors: ok"]


def test_mesh_text_names_its_axes():
    assert parse_mesh("data=2,model=4") == {"data": 2, "model": 4}
    assert parse_mesh("model=2") == {"model": 2}
    assert parse_mesh("") == {}
    for bad, reason in (("rows=2", "AXIS one of data, model"), ("model=0", "positive"),
                        ("model=2,model=2", "given twice"), ("data", "AXIS=SIZE")):
        with pytest.raises(ValueError, match=reason):
            parse_mesh(bad)


def test_a_mesh_must_use_every_device_it_is_given():
    one = jax.devices()[:1]
    assert make_mesh(devices=one).shape == {"data": 1, MODEL: 1}
    with pytest.raises(ValueError, match="model axis of 2 does not divide the 1 devices"):
        make_mesh(model=2, devices=one)
    with pytest.raises(ValueError, match="needs 2 devices; there are 1"):
        make_mesh(data=2, devices=one)


def test_only_the_big_matrices_are_split():
    specs = param_specs(Config.default(2, 128, 512))
    split = sorted(".".join(p.key for p in path) for path, spec in
                   jax.tree_util.tree_flatten_with_path(specs)[0] if MODEL in spec)
    assert split == ["blocks.att.a2", "blocks.att.g2", "blocks.att.key", "blocks.att.output",
                     "blocks.att.receptance", "blocks.att.v2", "blocks.att.value", "blocks.att.w2",
                     "blocks.ffn.key", "blocks.ffn.value", "emb", "head"]


def test_cli_refuses_a_mesh_the_devices_cannot_make(tmp_path, capsys, run_model_dir):
    out = tmp_path / "run"
    assert main(["run", "--model", str(run_model_dir), "--limit", "1", "--mesh", "data=1,model=3",
                 "--out", str(out)]) == 2
    assert "a model axis of 3 does not divide the 1 devices" in capsys.readouterr().err
    assert main(["run", "--model", str(run_model_dir), "--limit", "1", "--mesh", "rows=2", "--out", str(out)]) == 2
    assert "AXIS one of data, model" in capsys.readouterr().err
    assert not out.exists()


def test_benchmark_section_is_replaced_in_place(tmp_path):
    bench = runpy.run_path(str(ROOT / "scripts" / "bench_accelerator.py"))
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Before\n\nkept\n")
    bench["write_section"](path, bench["SECTION"] + "\n\nfirst\n")
    path.write_text(path.read_text() + "\n## After\n\nalso kept\n")
    bench["write_section"](path, bench["SECTION"] + "\n\nsecond\n")
    text = path.read_text()
    assert "first" not in text and text.count(bench["SECTION"]) == 1
    assert text.index("kept") < text.index("second") < text.index("also kept")
