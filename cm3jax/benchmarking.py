"""Ceilings and helpers the benchmark scripts share (../shared/BENCH.md): this machine's f32
matmul and memory-streaming rates, measured in the same run as the figures they bound."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}, jax {jax.__version__}")


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """A large jitted f32 matmul's rate: the compute ceiling."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a)
    out.block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def gemv_gbytes_per_second(n: int = 8192, repeats: int = 20) -> float:
    """A large jitted f32 matrix-vector product's rate of reading the matrix: the bandwidth ceiling."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    x = jnp.ones((n,), jnp.float32)
    gemv = jax.jit(lambda m, v: m @ v)
    gemv(a, x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = gemv(a, x)
    out.block_until_ready()
    return 4 * n * n * repeats / (time.perf_counter() - start) / 1e9


def time_calls(call: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls; `call` must block until its work is done."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)
