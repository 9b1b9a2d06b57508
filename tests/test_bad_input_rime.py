"""RIME given hostile input through its public CLI and API: case files, run folders, method
options, concurrent runs and Ctrl-C. Each is refused with one specific `error:` line (file, line,
field) before anything is written, or recovered without losing or repeating a row."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rime
from rime.__main__ import main
from rime.eval import protocol, rows
from rime.eval.protocol import Spec, parse_method

ROOT = Path(__file__).resolve().parent.parent
RUN_FLAGS = ["--filler", "0,1", "--max-new-tokens", "4", "--batch-size", "8"]


def bundled_record(case_id: str = "test-001") -> dict:
    return next(c for c in rime.load("test") if c.id == case_id).to_dict()


def cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


# ------------------------------------------------------------------------------------------------
# Case files


def test_a_property_without_adversarial_fillers_is_refused_before_the_run_starts(tmp_path, capsys):
    cases = tmp_path / "hats.jsonl"
    cases.write_text(json.dumps({**bundled_record(), "property": "hat color"}) + "\n")
    code, err = cli(capsys, "validate", str(cases))
    assert code == 0 and f"{cases}:1: warning: case 'test-001': field 'property': no adversarial fillers" in err
    out = tmp_path / "run"
    code, err = cli(capsys, "run", "--cases", str(cases), "--modes", "adversarial", "--out", str(out), *RUN_FLAGS)
    assert code == 2
    assert err.startswith(f"error: {cases}:1: case 'test-001': field 'property': no adversarial fillers are "
                          "written for 'hat color'")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("line, reason", [
    (b'{"id": "caf\xe9"}', "not UTF-8 text: byte 0xe9 at column 12"),
    (b'{"id": ' + b"7" * 5000 + b"}", "invalid JSON: an integer longer than 4300 digits"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid JSON: nested too deeply"),
])
def test_unreadable_case_lines_are_named_by_file_and_line(tmp_path, capsys, line, reason):
    cases = tmp_path / "bad.jsonl"
    cases.write_bytes(json.dumps(bundled_record()).encode() + b"\n" + line + b"\n")
    code, err = cli(capsys, "validate", str(cases))
    assert code == 1 and err.splitlines() == [f"{cases}:2: {reason}"]
    out = tmp_path / "run"
    code, err = cli(capsys, "run", "--cases", str(cases), "--out", str(out), *RUN_FLAGS)
    assert code == 2 and err.splitlines() == [f"error: {cases}:2: {reason}"] and not out.exists()


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_cases_with_unicode_line_separators_read_back(tmp_path, separator):
    record = bundled_record()
    record["recipient"]["passages"][0] += f" {separator}Noted."
    case = rime.Case.from_dict(record)
    rime.write_jsonl([case, rime.load("test")[2]], tmp_path / "cases.jsonl")
    assert rime.read_jsonl(tmp_path / "cases.jsonl")[0] == case
    assert rime.check_jsonl(tmp_path / "cases.jsonl") == (2, [])


# ------------------------------------------------------------------------------------------------
# Method options: checked before anything is written


def test_method_options_name_the_option_at_fault(tmp_path, capsys):
    assert parse_method("delta:layers=1").layers == (1,)
    out = tmp_path / "run"
    for method, message in [
        ("delta:alpha=abc", "error: method 'delta:alpha=abc': option alpha='abc': could not convert"),
        ("delta:layers=1.5", "error: method 'delta:layers=1.5': option layers='1.5': layers must be ints"),
        ("random:seed=x", "error: method 'random:seed=x': option seed='x': expected int, like the default 0"),
        ("delta:layers=98+99", "error: method delta(layers=(98, 99)): layers [98, 99] out of range for a model "
                               "with 4 layers"),
    ]:
        code, err = cli(capsys, "run", "--methods", method, "--limit", "1", "--out", str(out), *RUN_FLAGS)
        assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


# ------------------------------------------------------------------------------------------------
# Run folders


def folder_with_rows(tmp_path) -> tuple[Path, bytes]:
    out = tmp_path / "run"
    with rows.RunFolder(out, {"x": 1}) as folder:
        folder.append([{"case_id": "a", "text": "caf\u00e9"}, {"case_id": "a", "text": "\u4e2d"}])
    return out, (out / rows.ROWS).read_bytes()


def test_a_tail_torn_inside_a_multibyte_character_is_dropped_and_rewritten(tmp_path):
    out, whole = folder_with_rows(tmp_path)
    torn = json.dumps({"case_id": "b", "text": "\u4e2d"}, ensure_ascii=False).encode()
    (out / rows.ROWS).write_bytes(whole + torn[:torn.index("\u4e2d".encode()) + 1])
    assert rows.read_rows(out) == [{"case_id": "a", "text": "caf\u00e9"}, {"case_id": "a", "text": "\u4e2d"}]
    with rows.RunFolder(out, {"x": 1}) as folder:
        assert folder.finished({"a": 2, "b": 1}) == {"a"}
    assert (out / rows.ROWS).read_bytes() == whole
    # an unterminated last line that happens to parse is a cut-off write too: its case reruns
    (out / rows.ROWS).write_bytes(whole + json.dumps({"case_id": "b"}).encode())
    with rows.RunFolder(out, {"x": 1}) as folder:
        assert folder.finished({"a": 2, "b": 1}) == {"a"}
    assert (out / rows.ROWS).read_bytes() == whole


@pytest.mark.parametrize("line, reason", [
    (b'{"method": "none"}', "row has no string field 'case_id'"),
    (b'["a", 1]', "not a row (a JSON list, not an object)"),
    (b'{"case_id": "a", "text": "\xff"}', "not a row ('utf-8' codec can't decode byte 0xff"),
])
def test_a_complete_line_that_is_not_a_row_is_named_and_left_alone(tmp_path, line, reason):
    out, whole = folder_with_rows(tmp_path)
    (out / rows.ROWS).write_bytes(whole + line + b"\n")
    with pytest.raises(rows.RowsError) as caught:
        rows.read_rows(out)
    assert str(caught.value).startswith(f"{out / rows.ROWS}:3: {reason}")
    with pytest.raises(rows.RowsError), rows.RunFolder(out, {"x": 1}) as folder:
        folder.finished({"a": 2})
    assert (out / rows.ROWS).read_bytes() == whole + line + b"\n"


def test_a_rows_file_that_is_a_folder_is_refused_before_writing(tmp_path):
    out, _ = folder_with_rows(tmp_path)
    (out / rows.ROWS).unlink()
    (out / rows.ROWS).mkdir()
    with pytest.raises(rows.RowsError, match=r"/rows\.jsonl is not a file"):
        rows.RunFolder(out, {"x": 1})
    assert sorted(p.name for p in out.iterdir()) == sorted([rows.LOCK, rows.CONFIG, rows.ROWS])


def test_a_damaged_run_config_is_named(tmp_path, capsys):
    out, _ = folder_with_rows(tmp_path)
    (out / rows.CONFIG).write_bytes(b'{"x": 1')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = cli(capsys, "report", str(out))
    assert code == 2 and err.startswith(f"error: {out / rows.CONFIG}: not valid JSON (Expecting")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_an_out_folder_below_a_file_is_named(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, err = cli(capsys, "run", "--limit", "1", "--out", str(tmp_path / "file" / "run"), *RUN_FLAGS)
    assert code == 2
    assert err == f"error: cannot create {tmp_path / 'file' / 'run'}: {tmp_path / 'file'} is a file, not a folder\n"


# ------------------------------------------------------------------------------------------------
# Two processes, and Ctrl-C: real subprocesses on a tiny run


@pytest.fixture
def command(tmp_path, run_cases, run_model_dir):
    cases = tmp_path / "cases.jsonl"
    rime.write_jsonl(run_cases[:2], cases)
    return [sys.executable, "-m", "rime", "run", "--model", str(run_model_dir), "--cases", str(cases),
            "--out", str(tmp_path / "run"), *RUN_FLAGS]


def start(command, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache"), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def holds_lock(out: Path, process: subprocess.Popen) -> bool:
    lock = out / rows.LOCK
    return lock.is_file() and f'"pid": {process.pid}' in lock.read_text()


def expected_keys(run_cases) -> list[tuple]:
    spec = Spec.build(fillers=(0, 1), max_new_tokens=4)
    return [k for c in run_cases[:2] for k in protocol.row_keys(c, spec)]


def row_keys(out: Path) -> list[tuple]:
    return [(r["case_id"], r["method"], r["variant"], r["filler_mode"], r["filler_turns"], r["kind"], r["index"])
            for r in rows.read_rows(out)]


def test_a_second_run_on_the_same_folder_refuses_to_start(tmp_path, command, run_cases):
    out = tmp_path / "run"
    first = start(command)
    try:
        wait_for(lambda: holds_lock(out, first) or first.poll() is not None)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock for as long as the second one runs
        try:
            second = start(command)
            _, err = second.communicate(timeout=240)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2, err
        assert f"is in use by another run (pid {first.pid} on host " in err and "Traceback" not in err
        assert first.wait(timeout=240) == 0, first.stderr.read()
    finally:
        first.kill()
    assert row_keys(out) == expected_keys(run_cases)  # every row once


def test_ctrl_c_stops_a_run_at_once_and_the_rerun_loses_and_repeats_nothing(tmp_path, command, run_cases):
    out = tmp_path / "run"
    for ready in (lambda p: holds_lock(out, p),  # loading and compiling
                  lambda p: (out / rows.ROWS).is_file() and (out / rows.ROWS).stat().st_size > 0):
        process = start(command)
        try:
            wait_for(lambda p=process: ready(p) or p.poll() is not None)
            sent = time.monotonic()
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
            elapsed = time.monotonic() - sent
        finally:
            process.kill()
        assert process.returncode == 130, err
        assert "interrupted: the rows of every finished case are in" in err and "Traceback" not in err
        assert elapsed < 5, elapsed
        kept = row_keys(out) if (out / rows.ROWS).is_file() else []
        assert kept == expected_keys(run_cases)[:len(kept)]  # whole cases, in order
    finished = start(command)
    assert finished.wait(timeout=300) == 0, finished.stderr.read()
    assert row_keys(out) == expected_keys(run_cases)
