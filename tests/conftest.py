"""Test session setup: eight fake CPU devices, so sharded code runs on meshes here; and the main
job made once at test size, for the tests that need a trained run (mark them
`pytest.mark.xdist_group("demo")` so that one worker makes it for all of them)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    from cm3jax.demo import run_demo
    workdir = tmp_path_factory.mktemp("demo")
    return workdir, run_demo(str(workdir), "test")
