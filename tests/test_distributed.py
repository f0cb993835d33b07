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
