"""Multi-host start-up: `jax.distributed.initialize` when more than one process is configured.

On CPU the processes exchange collectives through gloo. Config keys (all optional):
`distributed.coordinator` ("host:port"), `distributed.num_processes`, `distributed.process_id`;
the usual JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables work too.
"""

from __future__ import annotations

import os

import jax
import ml_collections


def maybe_initialize(config: ml_collections.ConfigDict | None = None) -> bool:
    """Initialises once if a multi-process run is configured; returns whether it is one."""
    settings = config.get("distributed", {}) if config is not None else {}
    num = int(settings.get("num_processes", 0) or os.environ.get("JAX_NUM_PROCESSES", 1))
    if num <= 1:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=settings.get("coordinator") or os.environ.get("JAX_COORDINATOR_ADDRESS"),
        num_processes=num,
        process_id=int(settings.get("process_id", os.environ.get("JAX_PROCESS_ID", 0))),
    )
    return True
