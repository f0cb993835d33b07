"""The benchmark helpers return well-formed values (not a timing test): the CPU's name and ISA,
a one-line machine description, one duration per call, and a positive matmul rate."""

import os
import platform

import jax

from cm3jax.benchmarking import cpu_name_and_isa, gemv_gb_per_second, machine, matmul_gflops, time_calls


def test_cpu_name_and_isa_are_non_empty_strings():
    name, isa = cpu_name_and_isa()
    assert isinstance(name, str) and name.strip() == name and name
    assert isa in ("AVX-512", "AVX2", platform.machine())
    if os.path.exists("/proc/cpuinfo"):
        flags = open("/proc/cpuinfo").read().split()
        if "avx512f" in flags:
            assert isa == "AVX-512"
        elif "avx2" in flags:
            assert isa == "AVX2"


def test_machine_names_the_cpu_cores_and_versions():
    name, isa = cpu_name_and_isa()
    text = machine()
    assert text.startswith(f"{name} ({isa}), {os.cpu_count()} cores, ")
    assert f"python {platform.python_version()}" in text and f"jax {jax.__version__}" in text


def test_time_calls_times_each_call_once():
    calls = []
    seconds = time_calls(lambda: calls.append(1), 5)
    assert len(calls) == 5 and len(seconds) == 5
    assert all(isinstance(s, float) and s >= 0 for s in seconds)
    assert time_calls(lambda: None, 0) == []


def test_rates_are_positive_on_tiny_sizes():
    gflops = matmul_gflops(n=16, repeats=2)
    assert isinstance(gflops, float) and gflops > 0
    rate = gemv_gb_per_second(n=16, repeats=2)
    assert isinstance(rate, float) and rate > 0
