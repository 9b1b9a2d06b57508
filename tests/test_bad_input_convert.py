"""`python -m convert` given hostile files and paths: each is refused with one `error:` line that
names the file and what is wrong, exit code 1, and no output left behind."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from test_convert import TINY, byte_vocab  # noqa: E402
from test_convert_pth import _RunsCode, official_state_dict  # noqa: E402

from convert.__main__ import main  # noqa: E402
from rwkv_jax.checkpoint import resolve  # noqa: E402


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) <= 1
    return code, lines[0] if lines else ""


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    return byte_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pth") / "good.pth"
    torch.save(official_state_dict(TINY, torch.float32, layer0_v=True), path)
    return path


def shorten_record(src: Path, dst: Path, cut: int) -> str:
    """A copy of `src` whose first tensor record lost its last `cut` bytes: a valid zip archive."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        record = next(i.filename for i in z.infolist() if "/data/" in i.filename)
        for info in z.infolist():
            data = z.read(info)
            out.writestr(info.filename, data[:-cut] if info.filename == record else data)
    return record


@pytest.mark.parametrize("cut", [1, 4, 64])
def test_a_shortened_tensor_record_is_refused(tmp_path, capsys, good, cut):
    bad = tmp_path / "short.pth"
    record = shorten_record(good, bad, cut)
    torch.load(bad, weights_only=True, mmap=True)  # torch itself reads it, with a neighbour's bytes
    code, err = cli(capsys, str(bad), str(tmp_path / "out"))
    assert code == 1
    assert err.startswith(f"error: {bad}: ") and f": zip record {record} holds " in err
    assert "but the pickle declares a storage of" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.pth"]


def test_an_unsafe_pickle_is_refused_without_advice_to_load_it(tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    torch.save({"blocks.0.att.r_k": _RunsCode(str(tmp_path / "ran"))}, evil)
    code, err = cli(capsys, str(evil), str(tmp_path / "out"))
    assert code == 1 and "do not load this file at all" in err and "GLOBAL posix.mkdir" in err
    assert "weights_only" not in err and "trusted source" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]


def test_a_value_beyond_bf16_is_named_as_an_overflow(tmp_path, capsys):
    state = official_state_dict(TINY, torch.float32, layer0_v=True)
    state["blocks.1.att.w1"][2, 3] = 3.4e38  # finite in fp32, Inf in bf16
    torch.save(state, tmp_path / "big.pth")
    code, err = cli(capsys, str(tmp_path / "big.pth"), str(tmp_path / "out"), "--dtype", "bf16")
    assert code == 1
    assert err == (f"error: {tmp_path / 'big.pth'}: blocks.1.att.w1 holds 1 values beyond the range of bfloat16 "
                   "(they would become Inf); convert it to a wider dtype")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pth"]


@pytest.mark.parametrize("out", ["ckpt", "copy.pth", "hf"])
def test_an_output_below_a_file_is_named(tmp_path, capsys, good, vocab, out):
    src = good if out == "ckpt" else resolve("rime-tiny")
    (tmp_path / "file").write_text("")
    code, err = cli(capsys, str(src), str(tmp_path / "file" / out / "x"), "--vocab", str(vocab))
    assert code == 1
    assert err == f"error: cannot create {tmp_path / 'file' / out / 'x'}: {tmp_path / 'file'} is a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_outputs_honour_the_umask(tmp_path, capsys, good, vocab):
    old = os.umask(0o022)
    try:
        assert cli(capsys, str(good), str(tmp_path / "ckpt"), "--vocab", str(vocab)) == (0, "")
        assert cli(capsys, str(tmp_path / "ckpt"), str(tmp_path / "hf")) == (0, "")
    finally:
        os.umask(old)
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "hf").stat().st_mode & 0o777 == 0o755


def test_a_damaged_rwkv_jax_checkpoint_to_export_is_one_line(tmp_path, capsys):
    src = Path(shutil.copytree(resolve("rime-tiny"), tmp_path / "ckpt"))
    (src / "meta.json").write_text("{")
    code, err = cli(capsys, str(src), str(tmp_path / "copy.pth"))
    assert code == 1 and err.startswith(f"error: {src / 'meta.json'}: not valid JSON")
    assert not (tmp_path / "copy.pth").exists()
