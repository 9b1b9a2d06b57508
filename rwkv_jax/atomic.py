"""Directories that appear only once complete: a failed write leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def make_dirs(path: str | os.PathLike) -> Path:
    """`path` and its missing parents as folders (honouring the umask); a file in the way is
    named, rather than left to a bare `[Errno 17]`."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(f"cannot create {path}: {folder} is a file, not a folder")
            break
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
