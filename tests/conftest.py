"""Test session setup: eight fake CPU devices, so sharded code runs on meshes here; and the main
job made once per test run at test size, for the tests that need a trained run."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def demo(tmp_path_factory, worker_id):
    """(workdir, results) of `cm3jax demo --profile quick`. Under xdist the workers share one: the
    first to get the lock makes it, the others resume it (every stage already done)."""
    from filelock import FileLock

    from cm3jax.demo import run_demo
    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent  # the parent is this run's, shared by its workers
    workdir = root / "demo"
    with FileLock(str(root / "demo.lock")):
        results = run_demo(str(workdir), "quick")
    return workdir, results
