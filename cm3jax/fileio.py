"""Writes that leave nothing half-written: a temporary file (or directory) beside the target,
then a rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import BinaryIO, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def is_empty_or_absent(directory: str) -> bool:
    return not (os.path.isdir(directory) and os.listdir(directory))


@contextlib.contextmanager
def built_aside(out_dir: str, prefix: str) -> Iterator[str]:
    """Yields a new staging directory beside `out_dir`. When the block succeeds the staging
    directory replaces `out_dir`, which must then be absent or empty; when it fails the staging
    directory is deleted and `out_dir` is left as it was."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        yield staging
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.chmod(staging, 0o755)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
