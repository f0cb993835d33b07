"""Ceilings and helpers the benchmark scripts share (docs/benchmarks.md): this machine's f32
matmul and gemv rates, measured in the same run as the figures they bound, the peer model, and
the quiet check that keeps rounds timed beside other work out of the medians."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cm3jax.errors import UserError

# A round timed while other work held more than this share of the machine's CPU time is flagged.
BUSY_SHARE = 0.1


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


# How each side is held to a narrower vector ISA than the CPU has (`--max-isa` of the benches): XLA's
# code generator, and PyTorch's ATen kernels with the oneDNN and MKL libraries behind its matmuls.
# XLA:CPU runs its dots in YNNPACK, which picks its kernels from cpuid and reads no flag, so the
# cap reaches XLA's fused loops but not its matmuls (docs/benchmarks.md measures what that leaves).
ISA_CAPS = {
    "AVX2": {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def isa_capped_environ(environ: Mapping[str, str], isa: str) -> dict[str, str]:
    """`environ` with the settings that hold both sides of a bench to `isa` (one of ISA_CAPS);
    the flags already in XLA_FLAGS are kept (but an earlier cap), after which the cap comes."""
    if isa not in ISA_CAPS:
        raise UserError(f"Unknown --max-isa {isa!r}; choose one of {', '.join(ISA_CAPS)}.")
    capped = dict(environ)
    for key, value in ISA_CAPS[isa].items():
        kept = [flag for flag in environ.get(key, "").split() if not flag.startswith("--xla_cpu_max_isa=")]
        capped[key] = " ".join(kept + [value]) if key == "XLA_FLAGS" else value
    return capped


def restart_with_isa_cap(isa: str | None) -> None:
    """Replace this process by the same command with both sides held to `isa` (once: a process
    already under the cap goes on); None does nothing. The settings are read when JAX and
    PyTorch load, so they must be in the environment the process starts with."""
    if isa is None:
        return
    capped = isa_capped_environ(os.environ, isa)
    if all(os.environ.get(key) == value for key, value in capped.items()):
        return
    os.execve(sys.executable, sys.orig_argv, capped)


def jax_vector_isa() -> str:
    """The vector ISA XLA:CPU compiles for here: the CPU's widest, or the cap XLA_FLAGS sets."""
    _, isa = cpu_name_and_isa()
    flags = os.environ.get("XLA_FLAGS", "").split()
    caps = [flag.partition("=")[2] for flag in flags if flag.startswith("--xla_cpu_max_isa=")]
    return f"{isa}, code generation capped at {caps[-1]}" if caps else isa


def torch_vector_isa(torch) -> str:
    """The vector ISA PyTorch's ATen kernels dispatch to (ATEN_CPU_CAPABILITY caps it), with the
    oneDNN / MKL caps where set."""
    told = torch.backends.cpu.get_cpu_capability()
    caps = [f"{key}={os.environ[key]}" for key in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
            if key in os.environ]
    return f"{told} ({', '.join(caps)})" if caps else told


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


def cpu_jiffies(stat_text: str) -> tuple[int, int]:
    """(idle, total) jiffies of /proc/stat's aggregate `cpu` line: idle counts idle and iowait,
    total the eight fields user..steal (guest time is already inside user)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [int(v) for v in fields[1:9]]
            return values[3] + values[4], sum(values)
    raise ValueError("no aggregate 'cpu' line in this /proc/stat text")


def idle_share(seconds: float = 1.5, stat_path: str = "/proc/stat") -> float | None:
    """The share of the machine's CPU time that was idle over `seconds` while this process slept:
    1 - what other work held. None where there is no /proc/stat to read."""
    try:
        with open(stat_path) as f:
            idle_before, total_before = cpu_jiffies(f.read())
        time.sleep(seconds)
        with open(stat_path) as f:
            idle_after, total_after = cpu_jiffies(f.read())
    except (OSError, ValueError):
        return None
    total = total_after - total_before
    return (idle_after - idle_before) / total if total > 0 else None


@dataclasses.dataclass
class QuietCheck:
    """Samples the idle share before each timed round (`check`) and says which rounds the
    medians may use: those during whose check other work held at most BUSY_SHARE of the
    machine, or all of them with `allow_busy` (the busy ones stay flagged in the record)."""

    allow_busy: bool = False
    seconds: float = 1.5
    settle: float = 0.5  # first, so that this process's own worker threads stop spinning
    stat_path: str = "/proc/stat"
    idle: list[float | None] = dataclasses.field(default_factory=list)

    def check(self) -> None:
        time.sleep(self.settle)
        self.idle.append(idle_share(self.seconds, self.stat_path))

    @property
    def busy(self) -> list[bool]:
        return [share is not None and share < 1.0 - BUSY_SHARE for share in self.idle]

    def kept(self) -> list[int]:
        """Indices of the rounds the medians use; a UserError naming the fix when there are none."""
        kept = self._usable()
        if not kept:
            shares = ", ".join(f"{share:.2f}" for share in self.idle)
            raise UserError(f"Every timed round ran while other work held more than {BUSY_SHARE:.0%} of the machine "
                            f"(idle share before each: {shares}); stop the other work and run the benchmark again, "
                            "or pass --allow-busy to report these rounds (flagged).")
        return kept

    def _usable(self) -> list[int]:
        return [i for i, busy in enumerate(self.busy) if self.allow_busy or not busy]

    def select(self, per_round: Sequence) -> list:
        """The entries of `per_round` (one per checked round) that the medians use."""
        if len(per_round) != len(self.idle):
            raise ValueError(f"{len(per_round)} values for {len(self.idle)} checked rounds")
        return [per_round[i] for i in self.kept()]

    def record(self) -> dict:
        return {"idle_share": self.idle, "busy": self.busy, "busy_share_limit": BUSY_SHARE,
                "allow_busy": self.allow_busy, "rounds_in_medians": self._usable()}

    def summary(self) -> str:
        shares = [s for s in self.idle if s is not None]
        quiet = self.busy.count(False)
        told = f"{quiet} of {len(self.idle)} rounds quiet"
        if shares:
            told += f" (idle share {min(shares):.2f}-{max(shares):.2f} before them)"
        if quiet < len(self.idle):
            told += "; the busy ones are in the medians (--allow-busy)" if self.allow_busy else \
                "; the busy ones are left out of the medians"
        return told
