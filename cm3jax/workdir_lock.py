"""One `cm3jax demo` or `cm3jax train` at a time in a directory. The lock is the kernel's (flock on
WORKDIR/.cm3jax-P.lock, P the process index of a multi-host run, so the hosts of one job never
block each other), so it is released when the run ends, is interrupted or crashes; the file
keeps who holds it, for the message a second run gets."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from typing import Iterator

from cm3jax.errors import UserError


def lock_path(directory: str, process: int = 0) -> str:
    return os.path.join(directory, f".cm3jax-{process}.lock")


@contextlib.contextmanager
def workdir_lock(directory: str, command: str, process: int = 0) -> Iterator[None]:
    """Holds `directory` (made if absent) for `command` until the block ends; refuses, naming the
    holder, while another run holds it."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(lock_path(directory, process), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise UserError(f"{directory} is in use by another run (`{holder.get('command', 'cm3jax')}`, pid "
                            f"{holder.get('pid', '?')}, since {holder.get('started', '?')}); wait for it to end or "
                            f"stop it, or use another --workdir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"command": command, "pid": os.getpid(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
