"""Ceilings and helpers the benchmark scripts share (docs/benchmarks.md): this machine's f32
matmul and gemv rates, measured in the same run as the figures they bound, and the peer model."""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def cpu_name_and_isa() -> tuple[str, str]:
    """The CPU's model name and its widest vector ISA (AVX-512, AVX2 or neither), from /proc/cpuinfo
    where there is one."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
    return name, isa


def machine() -> str:
    name, isa = cpu_name_and_isa()
    return (f"{name} ({isa}), {os.cpu_count()} cores, python {platform.python_version()}, jax {jax.__version__}")


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


def time_calls(call: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls; `call` must block until its work is done."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds



def gemv_gb_per_second(n: int = 8192, repeats: int = 20) -> float:
    """A large jitted f32 matrix-vector product's rate in GB/s of matrix read: the memory ceiling
    of batch-1 decoding."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    x = jnp.ones((n,), jnp.float32)
    gemv = jax.jit(lambda m, v: m @ v)
    gemv(a, x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = gemv(a, x)
    out.block_until_ready()
    return 4 * n * n * repeats / (time.perf_counter() - start) / 1e9


def chameleon_peer(model_config):
    """transformers' ChameleonForConditionalGeneration at a decoder config's sizes (the peer of
    bench-small), seeded, on the CPU. Needs the `bench` extra."""
    import torch
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration
    m = model_config
    # The VQ-VAE is unused by text ids; keep it small so it costs no memory.
    vq_config = dict(embed_dim=4, num_embeddings=8, latent_channels=4, base_channels=32, channel_multiplier=[1],
                     num_res_blocks=1, resolution=8, attn_resolutions=None)
    peer_config = ChameleonConfig(
        vocab_size=m.vocab_size, hidden_size=m.d_model, intermediate_size=m.mlp_hidden,
        num_hidden_layers=m.n_layers, num_attention_heads=m.n_heads, num_key_value_heads=m.n_kv_heads,
        max_position_embeddings=m.max_seq_len, rope_theta=m.rope_theta, rms_norm_eps=m.norm_eps,
        vq_config=vq_config, vocabulary_map={"<image>": m.vocab_size - 1}, tie_word_embeddings=False)
    torch.manual_seed(0)
    return ChameleonForConditionalGeneration(peer_config)
