"""Multi-host start-up: `jax.distributed.initialize` when more than one process is configured.

On CPU the processes exchange collectives through gloo. Config keys (all optional):
`distributed.coordinator` ("host:port"), `distributed.num_processes`, `distributed.process_id`;
the usual JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables work too. On a
multi-host Cloud TPU slice (TPU_WORKER_HOSTNAMES names more than one worker) none is needed: JAX
finds the coordinator and this worker's id itself, so every worker runs the same command.
"""

from __future__ import annotations

import os

import jax
import ml_collections


def maybe_initialize(config: ml_collections.ConfigDict | None = None) -> bool:
    """Initialises once if a multi-process run is configured; returns whether it is one."""
    settings = config.get("distributed", {}) if config is not None else {}
    num = int(settings.get("num_processes", 0) or os.environ.get("JAX_NUM_PROCESSES", 1))
    tpu_workers = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if num <= 1 and len(tpu_workers) <= 1:
        return False
    if jax.distributed.is_initialized():
        return True
    if num <= 1:  # a TPU slice: JAX reads the cluster from the TPU environment
        jax.distributed.initialize()
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=settings.get("coordinator") or os.environ.get("JAX_COORDINATOR_ADDRESS"),
        num_processes=num,
        process_id=int(settings.get("process_id", os.environ.get("JAX_PROCESS_ID", 0))),
    )
    return True
