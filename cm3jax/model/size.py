"""Sizes of a decoder without building it: parameter count, bytes per device on a mesh, and the
bytes a decode step reads (its memory-bandwidth roofline)."""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx

from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sharding import MESH_AXES, partition_specs


def abstract_params(config: DecoderConfig):
    """The parameter State as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
    return nnx.state(nnx.eval_shape(lambda: Decoder(config, nnx.Rngs(0))), nnx.Param)


def count_params(config: DecoderConfig) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract_params(config))))


def bytes_per_device(config: DecoderConfig, mesh_shape: dict[str, int], optimizer_copies: int = 2,
                     bytes_per_value: int = 4) -> dict[str, float]:
    """Largest per-device bytes of parameters and of optimizer state (AdamW: two moments, same
    sharding as the parameters) when sharded by cm3jax.sharding.RULES on `mesh_shape`."""
    state = abstract_params(config)
    specs = partition_specs(state)
    params = 0
    for leaf, spec in zip(jax.tree.leaves(state), jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.P))):
        per_device = list(leaf.shape)
        for dim, axes in enumerate(spec):
            for axis in (axes,) if isinstance(axes, str) else (axes or ()):
                per_device[dim] = math.ceil(per_device[dim] / mesh_shape[axis])
        params += int(np.prod(per_device)) * bytes_per_value
    return {"params": params, "optimizer": optimizer_copies * params, "total": (1 + optimizer_copies) * params,
            "devices": int(np.prod([mesh_shape[a] for a in MESH_AXES]))}


def decode_roofline(config: DecoderConfig, batch: int, context: int, bandwidth: float,
                    bytes_per_value: int = 2, devices: int = 1) -> dict[str, float]:
    """What one decode step of `batch` rows, each attending over `context` cached tokens, reads
    from memory: every weight once and every row's K/V cache, split evenly over `devices` (tensor
    parallel); and the tokens per second per device that `bandwidth` (bytes/s per device) allows
    when reading is all a step does. Batch 1 decoding is bound by this on every accelerator."""
    weights = count_params(config) * bytes_per_value
    kv_cache = batch * config.n_layers * 2 * context * config.num_kv_heads * config.head_size * bytes_per_value
    per_device = (weights + kv_cache) / devices
    steps_per_second = bandwidth / per_device
    return {"weights": weights, "kv_cache": kv_cache, "bytes_per_device": per_device,
            "steps_per_second": steps_per_second, "tokens_per_second_per_device": batch * steps_per_second / devices}
