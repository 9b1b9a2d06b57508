"""A run folder: `run.json` (the config) and `rows.jsonl` (one scored row per line), resumable.

Rows are appended a group of whole cases at a time, in one write of newline-terminated lines
followed by flush and fsync. A run killed at any point leaves at worst an unterminated last line
(possibly cut inside a multi-byte character) or a case with part of its rows; opening the folder
again keeps exactly the complete cases (rewriting the file atomically if it must), so a restart
neither loses nor repeats a row. The config is recorded when the folder is created; reopening it
with another config is an error, since its rows would mix two experiments. A writer holds an
exclusive `fcntl.flock` on `run.lock` (which names its pid, host and start time) until it closes
the folder: a second run on the same folder refuses to start instead of writing every row twice.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rwkv_jax.atomic import make_dirs, read_json_object

CONFIG = "run.json"
ROWS = "rows.jsonl"
LOCK = "run.lock"
FORMAT = 1
# Held for each append: an interrupt handler takes it before exiting, so a write is never cut off.
WRITING = threading.Lock()


class ConfigMismatchError(ValueError):
    """A run folder was reopened with a config other than the one it was started with."""


class RowsError(ValueError):
    """`rows.jsonl` holds a complete line that is not a row: the file was changed by something else."""


class RunLockedError(OSError):
    """Another process is writing the run folder (an OS-level conflict, like `BlockingIOError`)."""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _differences(recorded: Any, now: Any, path: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(now, dict):
        return [d for key in sorted(set(recorded) | set(now))
                for d in _differences(recorded.get(key), now.get(key), f"{path}.{key}" if path else key)]
    return [] if recorded == now else [f"{path}: recorded {recorded!r}, now {now!r}"]


def read_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a rime run folder (no {CONFIG})")
    return read_json_object(path)


def read_rows(folder: str | os.PathLike) -> list[dict]:
    """Every complete row of a run folder (an unterminated last line is left out)."""
    return [row for row, _ in _parse(Path(folder) / ROWS)[0]]


def _row(path: Path, n: int, line: bytes) -> dict:
    where = f"{path}:{n}"
    try:
        row = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # also UnicodeDecodeError
        raise RowsError(f"{where}: not a row ({err}); the file was changed by something else") from None
    if not isinstance(row, dict):
        raise RowsError(f"{where}: not a row (a JSON {type(row).__name__}, not an object); "
                        "the file was changed by something else")
    if not isinstance(row.get("case_id"), str):
        raise RowsError(f"{where}: row has no string field 'case_id'; the file was changed by something else")
    return row


def _parse(path: Path) -> tuple[list[tuple[dict, bytes]], bool]:
    """(row, its line) for every newline-terminated line, and whether the file ends with a newline.
    Every write ends with one, so an unterminated last line is a write cut off by a kill: dropped."""
    if not path.is_file():
        return [], True
    *complete, last = path.read_bytes().split(b"\n")
    return [(_row(path, n, line), line) for n, line in enumerate(complete, 1)], not last


def _holder(raw: bytes) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"


def _lock(folder: Path) -> int:
    """An exclusive lock on the folder (its file descriptor), or `RunLockedError` naming the holder."""
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(os.pread(fd, 4096, 0))
        os.close(fd)
        raise RunLockedError(f"{folder} is in use by another run ({holder}); wait for it to finish, "
                             "or choose another --out folder") from None
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}).encode(), 0)
    return fd


class RunFolder:
    """The output folder of one run: checks the config, tracks finished cases, appends rows.

    A `writer` (the default; in a multi-process run, process 0) holds the folder's lock until
    `close`, and is the only one that writes. Use it as a context manager.
    """

    def __init__(self, folder: str | os.PathLike, config: Mapping[str, Any], *, writer: bool = True):
        self.folder = Path(folder)
        self.config = {"format": FORMAT, **config}
        self.rows_path = self.folder / ROWS
        self.writer = writer
        self._fd = None
        if writer:
            make_dirs(self.folder)
            if self.rows_path.exists() and not self.rows_path.is_file():
                raise RowsError(f"{self.rows_path} is not a file")
            self._fd = _lock(self.folder)
        try:
            self._check_config()
        except BaseException:
            self.close()
            raise

    def _check_config(self) -> None:
        config_path = self.folder / CONFIG
        if config_path.is_file():
            recorded = read_config(self.folder)
            diff = _differences(recorded, json.loads(json.dumps(self.config)))
            if diff:
                raise ConfigMismatchError(
                    f"{self.folder} holds a run with another config ({'; '.join(diff)}); rerun with the "
                    "original settings, or choose another --out folder")
        elif self.writer:
            _write_atomic(config_path, (json.dumps(self.config, indent=2, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        """Releases the lock (the lock file stays; its details are rewritten by the next holder)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finished(self, expected: Mapping[str, int]) -> set[str]:
        """The case ids whose rows are all present (`expected`: case id -> row count). A writer
        removes rows of unfinished cases, a torn last line and rows of unknown cases from the file."""
        parsed, clean = _parse(self.rows_path)
        counts = Counter(row["case_id"] for row, _ in parsed)
        done = {case for case, n in counts.items() if expected.get(case) == n}
        kept = [line for row, line in parsed if row["case_id"] in done]
        if self.writer and (len(kept) != len(parsed) or not clean):
            _write_atomic(self.rows_path, b"".join(line + b"\n" for line in kept))
        return done

    def append(self, rows: Iterable[dict]) -> None:
        """Appends rows in one write, durable when this returns."""
        if self._fd is None:
            raise RuntimeError(f"{self.folder} is not open for writing (closed, or not the writer)")
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        if not data:
            return
        with WRITING, open(self.rows_path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
