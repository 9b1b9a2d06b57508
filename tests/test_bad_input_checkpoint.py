"""Damaged, truncated or hand-edited checkpoints: `load` refuses each with a `CheckpointError`
naming the file and field (a flipped weight byte by its SHA-256), the CLI prints one line, and
nothing on disk is changed. Old checkpoints without checksums still load."""

import json
import os
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import perturbed_params

import rwkv_jax
from rime.__main__ import main
from rwkv_jax import Config
from rwkv_jax.checkpoint import CheckpointError, checksums, read_meta, resolve

DATA = Path("params") / "ocdbt.process_0" / "d"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bundled_copy(tmp_path) -> Path:
    return Path(shutil.copytree(resolve("rime-tiny"), tmp_path / "rime-tiny"))


def largest_data_file(folder: Path) -> Path:
    return max((folder / DATA).iterdir(), key=lambda p: p.stat().st_size)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_the_bundled_model_carries_a_checksum_for_every_array():
    model = rwkv_jax.load("rime-tiny")
    assert read_meta(resolve("rime-tiny"))["sha256"] == checksums(model.params)


def test_one_flipped_weight_byte_is_refused_unless_verification_is_off(bundled_copy):
    flip_byte(largest_data_file(bundled_copy), 1000)
    before = files(bundled_copy)
    damaged, intact = (rwkv_jax.load(d, verify=False).params for d in (bundled_copy, resolve("rime-tiny")))
    changed = [".".join(str(k.key) for k in path) for path, a in jax.tree_util.tree_flatten_with_path(damaged)[0]
               if np.asarray(a).tobytes() != np.asarray(_leaf(intact, path)).tobytes()]
    assert len(changed) == 1  # what verification stops: another weight, read without complaint
    with pytest.raises(CheckpointError, match=rf"/params: {re.escape(changed[0])} do not match the SHA-256 recorded "
                                              r"in meta\.json: the checkpoint is damaged"):
        rwkv_jax.load(bundled_copy)
    assert files(bundled_copy) == before


def _leaf(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def test_a_checkpoint_saved_before_checksums_still_loads(tmp_path):
    cfg = Config.default(2, 128, 300)
    params = perturbed_params(cfg)
    rwkv_jax.save(tmp_path / "old", params, cfg)
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    assert set(meta.pop("sha256")) == set(checksums(params))
    (tmp_path / "old" / "meta.json").write_text(json.dumps(meta))
    loaded = rwkv_jax.load(tmp_path / "old")  # unverified: there is nothing to verify against
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded.params)))


def edit_meta(**changes):
    def damage(folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(changes)
        (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return damage


DAMAGES = {
    "meta.json truncated": (lambda d: (d / "meta.json").write_text((d / "meta.json").read_text()[:50]),
                            r"/meta\.json: not valid JSON \(Expecting"),
    "meta.json not an object": (lambda d: (d / "meta.json").write_text("[]"),
                                r"/meta\.json: expected a JSON object, got list"),
    "dtype missing": (edit_meta(dtype=None), r"/meta\.json: field 'dtype' must be a str, it is missing"),
    "dtype unknown": (edit_meta(dtype="int8"), r"/meta\.json: field 'dtype': 'int8' is not float32"),
    "config incomplete": (edit_meta(config={"n_layer": 4}), r"/meta\.json: field 'config': .*missing 8 required"),
    "checksums of other arrays": (edit_meta(sha256={"emb": "00"}),
                                  r"/meta\.json: field 'sha256' does not list the params' arrays"),
    "orbax metadata garbled": (lambda d: (d / "params" / "_METADATA").write_text("{garbage"),
                               r"/params: damaged, or does not match its own config in meta\.json: JSONDecodeError"),
    "data file truncated": (lambda d: largest_data_file(d).write_bytes(largest_data_file(d).read_bytes()[:1000]),
                            r"/params: damaged, .*: Exception: Encountered error while reading array index"),
    "params folder gone": (lambda d: shutil.rmtree(d / "params"), r"rime-tiny: no params/ folder"),
}


@pytest.mark.parametrize("name", DAMAGES)
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_field(bundled_copy, capsys, tmp_path, name):
    damage, message = DAMAGES[name]
    damage(bundled_copy)
    before = files(bundled_copy)
    with pytest.raises(CheckpointError, match=message):
        rwkv_jax.load(bundled_copy)
    out = tmp_path / "run"
    assert main(["run", "--model", str(bundled_copy), "--limit", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bundled_copy}") and len(err.splitlines()) == 1, err
    assert files(bundled_copy) == before and not out.exists()


def test_checkpoint_folders_honour_the_umask(tmp_path):
    cfg = Config.default(1, 64, 300, head_size=64)
    old = os.umask(0o027)
    try:
        rwkv_jax.save(tmp_path / "c", perturbed_params(cfg), cfg)
    finally:
        os.umask(old)
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o750
