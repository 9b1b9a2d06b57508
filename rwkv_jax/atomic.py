"""Files at the edges: directories that appear only once complete (a failed write leaves nothing
behind), parents created or a file in their way named, JSON records read with the file named, and
OS errors told in one line."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def error_line(err: BaseException) -> str:
    """An expected error as one line for a command line: an OS error as `file: reason` rather than
    `[Errno 17] ...`, any other as it reads."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def read_json_object(path: Path, error: type[Exception] = ValueError) -> dict:
    """A JSON object from `path`; undecodable bytes, bad JSON, nesting too deep or another JSON
    type raise `error` naming the file."""
    try:
        value = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # also UnicodeDecodeError
        raise error(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def check_parents(path: str | os.PathLike) -> None:
    """Raises `NotADirectoryError` naming the file when one of `path`'s ancestors is a file, so a
    command can refuse an impossible output before doing any work (rather than a bare `[Errno 17]`)."""
    path = Path(path).absolute()
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"cannot create {path}: {folder} is a file, not a folder")
            return


def make_dirs(path: str | os.PathLike) -> Path:
    """`path` and its missing parents as folders (honouring the umask); see `check_parents`."""
    path = Path(path).absolute()
    check_parents(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot create {path}: it is a file, not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary sibling of `path` to fill; on success it replaces `path`, on any error it
    is removed. An existing `path` is refused unless `overwrite`. The folder gets the permissions
    of any new folder under the umask (`tempfile.mkdtemp` would make it private, 0700)."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    make_dirs(path.parent)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
