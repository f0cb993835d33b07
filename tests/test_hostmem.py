import subprocess
import sys

import pytest

from cm3jax import hostmem
from cm3jax.hostmem import TUNABLES, malloc_environ

glibc_linux = pytest.mark.skipif(malloc_environ({}) is None, reason="needs Linux with glibc")
OURS = ":".join(f"{key}={value}" for key, value in TUNABLES.items())


@glibc_linux
def test_settings_are_added_once_beside_the_users_own():
    assert malloc_environ({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": OURS}
    joined = malloc_environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})["GLIBC_TUNABLES"]
    assert joined == "glibc.malloc.hugetlb=1:" + OURS
    assert malloc_environ({"GLIBC_TUNABLES": joined}) is None
    mine = malloc_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})["GLIBC_TUNABLES"]  # the user's value stays
    assert mine.split(":")[0] == "glibc.malloc.arena_max=4" and mine.count("arena_max") == 1
    assert malloc_environ({"CM3JAX_SYSTEM_MALLOC": "1"}) is None


@glibc_linux
def test_restart_reexecutes_the_same_command_once_with_the_settings():
    code = ("import os, sys; print('start', flush=True); from cm3jax.hostmem import restart_with_reusing_malloc; "
            "restart_with_reusing_malloc(); print(os.environ['GLIBC_TUNABLES'], sys.argv[1:])")
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code, "arg"], env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["start", "start", f"{OURS} ['arg']"]


@glibc_linux
def test_a_process_that_may_run_on_an_accelerator_keeps_its_malloc(monkeypatch):
    assert malloc_environ({"JAX_PLATFORMS": "cuda"}) is None
    assert malloc_environ({"JAX_PLATFORMS": "tpu,cpu"}) is None
    assert malloc_environ({"JAX_PLATFORMS": "cpu"}) is not None
    monkeypatch.setattr(hostmem.importlib.util, "find_spec", lambda name: object() if name == "jax_plugins" else None)
    assert malloc_environ({}) is None  # a GPU or TPU plugin is installed
    assert malloc_environ({"JAX_PLATFORMS": "cpu"}) is not None
