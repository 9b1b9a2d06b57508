"""A run folder: `run.json` (the config) and `rows.jsonl` (one scored row per line), resumable.

Rows are appended a group of whole cases at a time, in one write followed by flush and fsync. A
run killed at any point leaves at worst a torn last line or a case with part of its rows; opening
the folder again keeps exactly the complete cases (rewriting the file atomically if it must), so
a restart neither loses nor repeats a row. The config is recorded when the folder is created;
reopening it with another config is an error, since its rows would mix two experiments.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CONFIG = "run.json"
ROWS = "rows.jsonl"
FORMAT = 1


class ConfigMismatchError(ValueError):
    """A run folder was reopened with a config other than the one it was started with."""


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
    return json.loads(path.read_text(encoding="utf-8"))


def read_rows(folder: str | os.PathLike) -> list[dict]:
    """Every complete row of a run folder (a torn last line is left out)."""
    return [row for row, _ in _parse(Path(folder) / ROWS)[0]]


def _parse(path: Path) -> tuple[list[tuple[dict, bytes]], bool]:
    """(row, its line) for every complete line, and whether the file ends cleanly with a newline.
    A last line cut off by a kill is dropped."""
    if not path.is_file():
        return [], True
    data = path.read_bytes()
    *complete, last = data.split(b"\n")
    out = []
    for n, line in enumerate(complete, 1):
        try:
            out.append((json.loads(line), line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not a row ({err}); the file was changed by something else") from None
    if last.strip():
        try:  # a last line that lost only its newline is whole
            out.append((json.loads(last), last))
        except json.JSONDecodeError:
            pass
    return out, not last


class RunFolder:
    """The output folder of one run: checks the config, tracks finished cases, appends rows."""

    def __init__(self, folder: str | os.PathLike, config: Mapping[str, Any]):
        self.folder = Path(folder)
        self.config = {"format": FORMAT, **config}
        self.rows_path = self.folder / ROWS
        self.folder.mkdir(parents=True, exist_ok=True)
        config_path = self.folder / CONFIG
        if config_path.is_file():
            recorded = read_config(self.folder)
            diff = _differences(recorded, json.loads(json.dumps(self.config)))
            if diff:
                raise ConfigMismatchError(
                    f"{self.folder} holds a run with another config:\n  " + "\n  ".join(diff)
                    + "\nRerun with the original settings, or choose another --out folder.")
        else:
            _write_atomic(config_path, (json.dumps(self.config, indent=2, sort_keys=True) + "\n").encode())

    def finished(self, expected: Mapping[str, int]) -> set[str]:
        """The case ids whose rows are all present (`expected`: case id -> row count). Rows of
        unfinished cases, a torn last line and rows of unknown cases are removed from the file."""
        parsed, clean = _parse(self.rows_path)
        counts = Counter(row["case_id"] for row, _ in parsed)
        done = {case for case, n in counts.items() if expected.get(case) == n}
        kept = [line for row, line in parsed if row["case_id"] in done]
        if len(kept) != len(parsed) or not clean:
            _write_atomic(self.rows_path, b"".join(line + b"\n" for line in kept))
        return done

    def append(self, rows: Iterable[dict]) -> None:
        """Appends rows in one write, durable when this returns."""
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        if not data:
            return
        with open(self.rows_path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
