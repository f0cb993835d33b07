"""maybe_initialize: a single-process configuration (no config, one process in the config or in
JAX_NUM_PROCESSES) is not a multi-process run and starts nothing."""

import jax
import ml_collections
import pytest

from cm3jax.distributed import maybe_initialize


@pytest.mark.parametrize("config", [
    None,
    ml_collections.ConfigDict({}),
    ml_collections.ConfigDict({"distributed": {"num_processes": 1}}),
    ml_collections.ConfigDict({"distributed": {"num_processes": 0, "coordinator": "localhost:1"}}),
])
def test_single_process_configs_return_false_without_initializing(config, monkeypatch):
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    assert maybe_initialize(config) is False
    assert not jax.distributed.is_initialized()


def test_one_process_in_the_environment_is_single_process(monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert maybe_initialize(ml_collections.ConfigDict({"distributed": {}})) is False
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("workers, starts", [("", False), ("t1v-0", False), ("t1v-0,t1v-1,t1v-2,t1v-3", True)])
def test_a_multi_host_tpu_slice_initialises_from_its_environment(workers, starts, monkeypatch):
    """Every worker of a TPU slice runs the same command: no coordinator or id is given, JAX's
    own TPU cluster detection supplies them."""
    calls = []
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", workers)
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert maybe_initialize(ml_collections.ConfigDict({"distributed": {}})) is starts
    assert calls == ([((), {})] if starts else [])
