"""Sharding by name: parameters and activations carry logical axis names; one rules table
maps them onto the mesh axes ('data', 'fsdp', 'tensor').

    mesh = make_mesh((2, 2, 2))            # data x fsdp x tensor, over every device
    with mesh_context(mesh):               # activations constrained at block boundaries
        ...
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cm3jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or axes). Anything unnamed is replicated.
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("position", None),
    ("norm", None),
    ("layers", None),  # scan_layers' stacked blocks: unsplit, a device holds its shard of every layer
)


def make_mesh(shape: Sequence[int], devices=None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh; the shape's product must equal the device count."""
    devices = list(devices if devices is not None else jax.devices())
    if int(np.prod(shape)) != len(devices):
        raise UserError(f"A mesh of shape {tuple(shape)} needs {int(np.prod(shape))} devices; there are "
                        f"{len(devices)}. Make data x fsdp x tensor equal the device count.")
    # Auto axes: XLA propagates shardings from the parameters and the block-boundary constraints.
    return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def logical_to_mesh(names: Sequence[str | None]) -> PartitionSpec:
    rules = dict(RULES)
    return PartitionSpec(*(rules.get(n) if n is not None else None for n in names))


@contextlib.contextmanager
def mesh_context(mesh: Mesh):
    """Inside, `constrain` pins activations to the mesh."""
    with jax.set_mesh(mesh):
        yield


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Sharding constraint by logical names; a no-op outside a mesh context."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_mesh(names))


def partition_specs(state):
    """PartitionSpecs for an nnx State (or abstract state) whose Variables carry `logical_axes`
    metadata; Variables without it are replicated."""
    def spec(variable):
        names = variable.get_metadata().get("logical_axes")
        return variable.replace(logical_to_mesh(names) if names else PartitionSpec())
    return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state, mesh: Mesh):
    """NamedShardings (as an nnx State of the same structure) for `state` on `mesh`."""
    specs = partition_specs(state)
    return jax.tree.map(lambda v: v.replace(NamedSharding(mesh, v.get_value())), specs,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    return NamedSharding(mesh, logical_to_mesh(("batch",) + (None,) * (ndim - 1)))
