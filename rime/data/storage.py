"""Reading and writing RIME splits: JSONL in the paper's format, a Hugging Face `DatasetDict`
(`rime.data.hub`), and the splits bundled as package data, so they load offline:
`rime/data/{test,dev}.jsonl` and the many-edit `session_{test,dev}.jsonl`, the default seed's build
(regenerate them with `python -m rime build --jsonl-only --out rime/data`), and `rime/data/natural.jsonl`,
written by hand. A file may mix single cases and sessions.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from rime.data.errors import CaseError
from rime.data.hub import read_saved, to_dataset_dict
from rime.data.schema import Case, Record, read_record
from rime.data.turns import FILLER_MODES, MAX_FILLER_TURNS, filler_turns

GENERATED_SPLITS = ("test", "dev", "session_test", "session_dev")  # `python -m rime build` writes them
# hand-written in ordinary English, never generated nor trained on: how the model reads prose that
# is not the corpus's own
HAND_WRITTEN_SPLITS = ("natural",)
BUNDLED_SPLITS = (*GENERATED_SPLITS, *HAND_WRITTEN_SPLITS)
HF_DIRNAME = "hf"


class FormatError(ValueError):
    """A fault in a file rather than in one case: bad JSON, a repeated id, no cases."""


def write_jsonl(cases: Iterable[Record], path: str | os.PathLike) -> None:
    lines = (json.dumps(case.to_dict(), ensure_ascii=False) for case in cases)
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _parse(data: bytes, label: str) -> Iterator[tuple[int, Record | ValueError]]:
    """Each non-blank line's number and its case, or the error that rejects it. Lines end at `\\n` only:
    JSON strings may hold U+2028, U+2029 or U+0085, which `str.splitlines` would split at."""
    first_line: dict[str, int] = {}
    for n, raw in enumerate(data.split(b"\n"), 1):
        where = f"{label}:{n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield n, FormatError(f"{where}: not UTF-8 text: byte 0x{raw[err.start]:02x} at column {err.start + 1}")
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, an integer past the digit limit
            reason = ("nested too deeply" if isinstance(err, RecursionError) else
                      f"an integer longer than {sys.get_int_max_str_digits()} digits" if "Exceeds the limit" in str(err)
                      else str(err))
            yield n, FormatError(f"{where}: invalid JSON: {reason}")
            continue
        try:
            case = read_record(record)
        except CaseError as err:
            err.where = where
            yield n, err
            continue
        if case.id in first_line:
            yield n, FormatError(f"{where}: case id {case.id!r} already used on line {first_line[case.id]}")
            continue
        first_line[case.id] = n
        yield n, case
    if not first_line:
        yield 0, FormatError(f"{label}: no cases")


def _read_jsonl_bytes(data: bytes, label: str) -> list[Record]:
    cases = []
    for _, item in _parse(data, label):
        if isinstance(item, ValueError):
            raise item
        cases.append(item)
    return cases


def read_jsonl(path: str | os.PathLike) -> list[Record]:
    """All cases of a JSONL file; raises the first problem (a `CaseError` carries file:line)."""
    return _read_jsonl_bytes(Path(path).read_bytes(), str(path))


def check_jsonl(path: str | os.PathLike) -> tuple[int, list[str]]:
    """(valid cases, every problem as a message) for a JSONL file of cases."""
    items = [item for _, item in _parse(Path(path).read_bytes(), str(path))]
    return sum(not isinstance(i, ValueError) for i in items), [str(i) for i in items if isinstance(i, ValueError)]


def filler_warnings(path: str | os.PathLike) -> list[str]:
    """For every valid case of a JSONL file that some filler mode cannot serve (no adversarial
    fillers for its property, too few that avoid its facts), why: `rime run` refuses it in that mode."""
    warnings = []
    for n, item in _parse(Path(path).read_bytes(), str(path)):
        for mode in FILLER_MODES if isinstance(item, Case) else ():
            try:
                filler_turns(item, mode, MAX_FILLER_TURNS)
            except CaseError as err:
                warnings.append(f"{path}:{n}: warning: {err}")
    return warnings


def write_build(splits: dict[str, list[Record]], out: str | os.PathLike, hf: bool = True) -> list[Path]:
    """Writes `OUT/<split>.jsonl` for every split and, with `hf`, the DatasetDict under `OUT/hf`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cases in splits.items():
        write_jsonl(cases, out / f"{name}.jsonl")
        written.append(out / f"{name}.jsonl")
    if hf:
        to_dataset_dict(splits).save_to_disk(str(out / HF_DIRNAME))
        written.append(out / HF_DIRNAME)
    return written


def _jsonl(path_or_split: str | os.PathLike) -> tuple[bytes, str] | None:
    """A bundled split's or a JSONL file's bytes and label; None for a `save_to_disk` folder."""
    if isinstance(path_or_split, str) and path_or_split in BUNDLED_SPLITS:
        data = resources.files("rime.data").joinpath(f"{path_or_split}.jsonl").read_bytes()
        return data, f"rime/data/{path_or_split}.jsonl"
    path = Path(path_or_split)
    if path.is_file():
        return path.read_bytes(), str(path)
    return None


def load(path_or_split: str | os.PathLike, split: str | None = None) -> list[Record]:
    """Cases from a bundled split name (`"test"`, `"dev"`, `"natural"`, `"session_test"`, ...), a JSONL
    file or a `save_to_disk` folder (a DatasetDict: all splits in order, or only `split`). Bundled names
    win over same-named paths; write `./test` for a local file called `test`."""
    path = Path(path_or_split)
    if path.is_dir() and not (isinstance(path_or_split, str) and path_or_split in BUNDLED_SPLITS):
        return read_saved(path, split)
    jsonl = _jsonl(path_or_split)
    if jsonl is not None and split is None:
        return _read_jsonl_bytes(*jsonl)
    if split is not None:
        raise ValueError("`split` only selects a split of a saved DatasetDict folder")
    raise FileNotFoundError(f"{path_or_split!r} is neither a bundled split {BUNDLED_SPLITS}, a JSONL file "
                            "nor a save_to_disk folder")


def locate(path_or_split: str | os.PathLike, case_id: str) -> str:
    """Where a case of `load(path_or_split)` was read (`file:line`), for messages about it."""
    jsonl = _jsonl(path_or_split)
    if jsonl is None:
        return str(path_or_split)
    found = (n for n, item in _parse(*jsonl) if not isinstance(item, ValueError) and item.id == case_id)
    return f"{jsonl[1]}:{next(found, '?')}"
