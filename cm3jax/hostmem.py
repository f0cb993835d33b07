"""Host memory: start the process with a glibc malloc that keeps freed memory for reuse.

XLA:CPU allocates each executable run's temporaries afresh (bench-small's training step: one
3.9 GB block). glibc serves a block that large, or any block asked for on one of XLA's worker
threads, from a fresh mmap and unmaps it on free, so every step faults all of it in again,
4 KiB at a time: ~1M page faults and ~1.5 s of kernel time per 4 s step on the 2-core
machine. With one malloc arena, no mmap'd blocks and no trimming, freed blocks stay in the
heap and the next step reuses them without a fault (the step takes ~3.2 s instead of ~3.9 s).
The process keeps its peak heap until it exits, as pooling allocators do. glibc reads these
settings only at process start, hence the re-exec. Measured on XLA:CPU only, so a process that
may run JAX on an accelerator (JAX_PLATFORMS naming one, or a GPU/TPU plugin installed) is left
as it is.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Mapping

TUNABLES = {
    "glibc.malloc.arena_max": "1",  # every thread allocates from the main heap ...
    "glibc.malloc.mmap_max": "0",  # ... never from a block mapped for it alone ...
    "glibc.malloc.trim_threshold": str(1 << 40),  # ... and free never hands the heap's top back
}
OPT_OUT = "CM3JAX_SYSTEM_MALLOC"  # "1": leave malloc as the environment has it
ACCELERATOR_MODULES = ("jax_plugins", "libtpu", "jax_cuda12_plugin", "jax_cuda13_plugin")  # JAX's GPU/TPU plugins


def may_use_accelerator(environ: Mapping[str, str]) -> bool:
    """Whether JAX could pick a backend other than the CPU in a process with this environment
    (decided without importing JAX, which would start its backends)."""
    platforms = environ.get("JAX_PLATFORMS", "")
    if platforms:
        return any(p.strip() not in ("", "cpu") for p in platforms.split(","))
    return any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_MODULES)


def malloc_environ(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` with TUNABLES added to GLIBC_TUNABLES, or None when there is nothing to add
    (not glibc, JAX may use an accelerator, every setting already there, or
    CM3JAX_SYSTEM_MALLOC=1). Settings the environment already has, with any value, are the
    user's and stay as they are."""
    if (sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or environ.get(OPT_OUT) == "1"
            or may_use_accelerator(environ)):
        return None
    current = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    present = {t.split("=", 1)[0] for t in current}
    added = [f"{key}={value}" for key, value in TUNABLES.items() if key not in present]
    if not added:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(current + added)}


def restart_with_reusing_malloc() -> None:
    """Replace this process by the same command in malloc_environ (once: the restarted process
    finds the settings there and returns). Call before any work is done."""
    environ = malloc_environ(os.environ)
    if environ is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environ)
