"""Output files: written whole or not at all, and checked before a long run starts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # the process's file-creation mask, read once at import (setting it to
# read it would open a window for files other threads create)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` to write to: when the block ends without an error it
    gets the permissions a new file gets (0666 less the umask) and replaces `path`;
    otherwise it is removed and `path` is left as it was. Creates missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            os.chmod(tmp, 0o666 & ~UMASK)
        except OSError:  # a file system without modes: keep what it gives
            pass
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_problem(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why `path` cannot be written as an output file (folder=True: a folder of outputs),
    or None: it is a folder (or not one), or it lies under a file, or under a folder this
    process may not write to."""
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            return "exists and is not a folder"
    elif path.is_dir():
        return "is a folder"
    base = path if folder else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        return f"{base} is not a folder"
    try:  # the one sure test: make (and remove) a file there
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        return f"cannot write in folder {base} ({exc.strerror or exc})"
    return None
