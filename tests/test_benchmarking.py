"""The benchmark helpers return well-formed values (not a timing test): the CPU's name and ISA,
a one-line machine description, one duration per call, a positive matmul rate; the ISA cap a
restarted bench runs under, as both sides report it; and the quiet check that flags rounds timed
beside other work (from /proc/stat text written by the test)."""

import os
import platform
import subprocess
import sys
import textwrap

import jax
import pytest

from cm3jax.benchmarking import (cpu_name_and_isa, gemv_gb_per_second, isa_capped_environ, machine, matmul_gflops,
                                 time_calls)
from cm3jax.errors import UserError


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


def test_the_isa_cap_sets_every_library_and_keeps_other_xla_flags():
    capped = isa_capped_environ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "HOME": "/h"}, "AVX2")
    assert capped["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX2"
    assert (capped["ATEN_CPU_CAPABILITY"], capped["ONEDNN_MAX_CPU_ISA"], capped["MKL_ENABLE_INSTRUCTIONS"]) == (
        "avx2", "AVX2", "AVX2")
    assert capped["HOME"] == "/h" and isa_capped_environ({}, "AVX2")["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"
    assert isa_capped_environ(capped, "AVX2") == capped  # a capped process is not restarted again
    recapped = isa_capped_environ({"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"}, "AVX2")
    assert recapped["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"
    with pytest.raises(UserError, match="Unknown --max-isa 'AVX3'; choose one of AVX2"):
        isa_capped_environ({}, "AVX3")


@pytest.mark.skipif(cpu_name_and_isa()[1] not in ("AVX2", "AVX-512"), reason="needs an x86 CPU with AVX2")
def test_a_bench_restarted_under_the_cap_reports_it_on_both_sides_and_still_computes():
    pytest.importorskip("torch")
    script = textwrap.dedent("""
        import os, sys
        from cm3jax.benchmarking import jax_vector_isa, restart_with_isa_cap, torch_vector_isa
        print("start", flush=True)
        restart_with_isa_cap("AVX2")
        import jax.numpy as jnp, torch
        print("sum", float(jnp.arange(10.0).sum()))
        print("jax", jax_vector_isa())
        print("torch", torch_vector_isa(torch))
    """)
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ATEN_CPU_CAPABILITY")}
    out = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True,
                         timeout=120).stdout
    lines = out.splitlines()
    assert lines.count("start") == 2, out  # restarted once, then went on
    assert "sum 45.0" in lines
    assert f"jax {cpu_name_and_isa()[1]}, code generation capped at AVX2" in lines
    assert "torch AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2)" in lines


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


def _stat(path, idle, busy):
    # user nice system idle iowait irq softirq steal guest guest_nice
    path.write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {busy} 0 0 {idle} 0 0 0 0 0 0\nintr 1 2 3\n")


def test_cpu_jiffies_read_the_aggregate_line_with_iowait_as_idle_and_guest_inside_user():
    from cm3jax.benchmarking import cpu_jiffies
    text = "cpu0 9 9 9 9 9 9 9 9 9 9\ncpu  100 2 30 500 20 1 2 3 50 0\n"
    assert cpu_jiffies(text) == (520, 658)
    with pytest.raises(ValueError, match="no aggregate 'cpu' line"):
        cpu_jiffies("cpu0 1 2 3 4 5 6 7 8\n")


def test_the_idle_share_is_measured_between_two_reads(tmp_path, monkeypatch):
    from cm3jax import benchmarking
    stat = tmp_path / "stat"
    _stat(stat, idle=1000, busy=0)
    monkeypatch.setattr(benchmarking.time, "sleep", lambda seconds: _stat(stat, idle=1075, busy=25))
    assert benchmarking.idle_share(1.0, str(stat)) == pytest.approx(0.75)
    assert benchmarking.idle_share(1.0, str(tmp_path / "missing")) is None, "no /proc/stat: unknown, not busy"


def test_busy_rounds_are_flagged_and_left_out_of_the_medians_unless_allowed(tmp_path, monkeypatch):
    from cm3jax import benchmarking
    from cm3jax.benchmarking import QuietCheck
    from cm3jax.errors import UserError
    stat, clock = tmp_path / "stat", {"idle": 0, "busy": 0}
    busy_per_check = iter([1, 30, 5, 0, 40])  # other work's share of 100 jiffies, one check each

    def sleep(seconds):
        if seconds == 1.5:  # the measured interval, not the settling pause before it
            busy = next(busy_per_check)
            clock["idle"], clock["busy"] = clock["idle"] + 100 - busy, clock["busy"] + busy
            _stat(stat, **clock)

    monkeypatch.setattr(benchmarking.time, "sleep", sleep)
    _stat(stat, **clock)
    quiet = QuietCheck(stat_path=str(stat))
    for _ in range(3):
        quiet.check()
    assert quiet.idle == pytest.approx([0.99, 0.70, 0.95]) and quiet.busy == [False, True, False]
    assert quiet.select([10.0, 99.0, 12.0]) == [10.0, 12.0]
    assert quiet.record()["rounds_in_medians"] == [0, 2] and "2 of 3 rounds quiet" in quiet.summary()
    with pytest.raises(ValueError, match="2 values for 3 checked rounds"):
        quiet.select([1.0, 2.0])

    allowed = QuietCheck(allow_busy=True, stat_path=str(stat), idle=[0.5, 0.99])
    assert allowed.select([1.0, 2.0]) == [1.0, 2.0] and "in the medians (--allow-busy)" in allowed.summary()
    every_round_busy = QuietCheck(stat_path=str(stat), idle=[0.6, 0.5])
    with pytest.raises(UserError, match=r"idle share before each: 0.60, 0.50.*--allow-busy"):
        every_round_busy.select([1.0, 2.0])
    assert every_round_busy.record()["busy"] == [True, True], "the record keeps what a failed select could not use"
