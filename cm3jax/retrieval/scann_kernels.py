"""ScaNN's SIMD kernels: switch on the AVX2 / AVX-512 code its pip wheel ships but never picks.

The scann 1.4.2 wheel is built with its CPU detection compiled out: `research_scann::port::
TestCPUFeature` is `return false` for every feature, so the flags ScaNN dispatches its kernels
on (`flags_internal::should_use_avx2`, `should_use_avx512`) stay false and every search runs the
SSE4 kernels, although the wheel holds AVX2 and AVX-512 builds of them (asymmetric-hashing
LUT16 scans, exact re-ranking). The flags are exported globals; `enable` sets them from the
features NumPy detects (which also checks that the OS saves the wide registers). On the bench's
1M x 512 index this takes ScaNN from 5,200 to 8,700 queries/s at the same results. Only the
builds it was checked on are touched (BROKEN_DETECTION); others dispatch as they choose.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import sys
from collections.abc import Iterable

# level -> (the flag's symbol, the CPU features its kernels use, as NumPy names them)
LEVELS = {
    "avx2": ("_ZN14research_scann14flags_internal15should_use_avx2E", ("AVX2", "FMA3")),
    "avx512": ("_ZN14research_scann14flags_internal17should_use_avx512E", ("AVX512F", "AVX512DQ", "AVX512BW",
                                                                             "AVX512VL")),
}

# ScaNN releases whose wheels were disassembled and found with the CPU detection compiled out.
BROKEN_DETECTION = ("1.4.2",)


def needs_enabling() -> bool:
    try:
        return importlib.metadata.version("scann") in BROKEN_DETECTION
    except importlib.metadata.PackageNotFoundError:
        return False


def _flags() -> dict[str, ctypes.c_bool] | None:
    """ScaNN's dispatch flags, or None where this ScaNN build has none to set."""
    importlib.import_module("scann")  # loads scann_pybind
    module = sys.modules.get("scann_pybind")
    if module is None or sys.platform != "linux":
        return None
    library = ctypes.CDLL(module.__file__)  # the loaded library itself: dlopen counts references
    try:
        return {level: ctypes.c_bool.in_dll(library, symbol) for level, (symbol, _) in LEVELS.items()}
    except ValueError:
        return None


def cpu_levels() -> list[str]:
    """The levels of LEVELS this CPU and OS can run."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return [level for level, (_, needs) in LEVELS.items() if all(features.get(f, False) for f in needs)]


def current() -> dict[str, bool]:
    """The levels ScaNN dispatches on now ({} where this build has no flags to read)."""
    flags = _flags()
    return {} if flags is None else {level: bool(flag.value) for level, flag in flags.items()}


def select(levels: Iterable[str]) -> None:
    """Dispatch exactly on `levels` (those this CPU cannot run are refused)."""
    levels, flags = set(levels), _flags()
    unknown = levels - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown ScaNN kernel levels {sorted(unknown)}; known: {sorted(LEVELS)}")
    unsupported = levels - set(cpu_levels())
    if unsupported:
        raise ValueError(f"this CPU cannot run ScaNN's {sorted(unsupported)} kernels")
    if flags is None:
        raise RuntimeError("this ScaNN build has no kernel flags to set")
    for level, flag in flags.items():
        flag.value = level in levels


def enable() -> list[str]:
    """On the builds of BROKEN_DETECTION, switch on every level this CPU runs (never off: a
    build that detects more keeps it). Returns the levels on afterwards."""
    flags = _flags()
    if flags is None:
        return []
    if not needs_enabling():
        return [level for level, flag in flags.items() if flag.value]
    for level in cpu_levels():
        flags[level].value = True
    return [level for level, flag in flags.items() if flag.value]
