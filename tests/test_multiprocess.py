"""Two processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) run one `python -m rime run`
over a data=2, model=2 mesh: the rows equal a single-process run, only process 0 writes, and a run
killed (both processes, SIGKILL) after its first case resumes with no row lost or repeated."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rime
import rwkv_jax
from rime.eval import protocol, rows
from rime.eval.protocol import Spec
from rime.eval.runner import run
from rwkv_jax import Config
from rwkv_jax.bundle import Model
from rwkv_jax.params import perturbed_params
from rwkv_jax.tokenizer import subset_vocab, world_tokenizer

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 240  # every process is killed by then, whatever happens
FLAGS = ["--filler", "0", "--max-new-tokens", "4", "--batch-size", "8", "--mesh", "data=2,model=2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, run_cases):
    """A random model with 2 heads (the model axis splits them), vocab padded to a multiple of 8."""
    texts = []
    for case in run_cases:
        texts += [protocol.recipient_text(case)] + [protocol.question_prompt(q) for q in protocol.questions(case)]
    tokenizer, _ = subset_vocab(world_tokenizer(), texts, "rime-test")
    cfg = Config.default(2, 128, -(-tokenizer.vocab_size // 8) * 8)
    model = Model(params=perturbed_params(cfg, seed=4), cfg=cfg, tokenizer=tokenizer)
    return rwkv_jax.save(tmp_path_factory.mktemp("model") / "two-heads", model.params, cfg, tokenizer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, model_dir: Path, case_file: Path) -> list[subprocess.Popen]:
    """Both processes of one run, each in its own folder, with the same command and `--out run`."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache")}
    procs = []
    for i in range(2):
        cwd = tmp_path / f"process{i}"
        cwd.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "rime", "run", "--model", str(model_dir), "--cases", str(case_file),
                   *FLAGS, "--out", "run", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                   "--process-id", str(i)]
        log = open(cwd / "log.txt", "ab")
        procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def kill(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


def log(tmp_path: Path) -> str:
    return "\n".join((tmp_path / f"process{i}" / "log.txt").read_text(errors="replace")[-3000:] for i in range(2))


def wait(procs, tmp_path: Path, until, deadline: float) -> None:
    try:
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"no result within {LIMIT_S} s:\n{log(tmp_path)}")
            if any(p.poll() not in (None, 0) for p in procs):
                raise AssertionError(f"a process failed:\n{log(tmp_path)}")
            time.sleep(0.05)
    except BaseException:
        kill(procs)
        raise


@pytest.mark.slow
def test_two_processes_write_single_process_rows_once_and_resume_after_a_kill(tmp_path, model_dir, run_cases):
    run_cases = run_cases[:2]  # the kill comes after the first
    spec = Spec.build(fillers=(0,), max_new_tokens=4)
    want = rows.read_rows(run(tmp_path / "single", rwkv_jax.load(model_dir), str(model_dir), run_cases,
                              "cases", spec, batch_size=8).folder)
    case_file = tmp_path / "cases.jsonl"
    rime.write_jsonl(run_cases, case_file)
    out = tmp_path / "process0" / "run"
    deadline = time.monotonic() + LIMIT_S

    procs = start(tmp_path, model_dir, case_file)  # killed once the first case's rows are written
    wait(procs, tmp_path, lambda: (out / rows.ROWS).is_file() and (out / rows.ROWS).stat().st_size, deadline)
    kill(procs)
    first = rows.read_rows(out)
    assert 0 < len(first) < len(want), "the kill came after the whole run"

    procs = start(tmp_path, model_dir, case_file)
    wait(procs, tmp_path, lambda: all(p.poll() == 0 for p in procs), deadline)
    got = rows.read_rows(out)
    assert not (tmp_path / "process1" / "run").exists()  # process 1 wrote nothing
    assert json.loads((out / rows.LOCK).read_text())["pid"] == procs[0].pid  # process 0 held the folder
    assert len(got) == len(want) and got[:len(first)] == first
    for a, b in zip(got, want, strict=True):
        assert {k: v for k, v in a.items() if k not in ("p_new", "p_old")} == \
            {k: v for k, v in b.items() if k not in ("p_new", "p_old")}
        np.testing.assert_allclose([a["p_new"], a["p_old"]], [b["p_new"], b["p_old"]], rtol=1e-4, atol=1e-7)
