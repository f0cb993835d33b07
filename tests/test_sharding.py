import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.sharding import constrain, logical_to_mesh, make_mesh, mesh_context, partition_specs


class _Small(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.zeros((4, 8)), logical_axes=("embed", "mlp"))
        self.stacked = nnx.Param(jnp.zeros((2, 4)), logical_axes=("layers", "embed"))
        self.plain = nnx.Param(jnp.zeros((3,)))


def test_logical_names_map_to_mesh_axes():
    assert logical_to_mesh(("batch", "length", "act_vocab")) == jax.P(("data", "fsdp"), None, "tensor")
    assert logical_to_mesh(("layers", "embed", None, "heads")) == jax.P(None, "fsdp", None, "tensor")


def test_partition_specs_follow_each_parameters_names():
    specs = partition_specs(nnx.state(_Small(), nnx.Param))
    assert specs["w"].get_value() == jax.P("fsdp", "tensor")
    assert specs["stacked"].get_value() == jax.P(None, "fsdp")
    assert specs["plain"].get_value() == jax.P()  # no names: replicated


def test_a_mesh_of_the_wrong_size_is_refused_with_the_fix():
    with pytest.raises(UserError, match=r"needs 4 devices; there are 8\. Make data x fsdp x tensor equal"):
        make_mesh((2, 2, 1), jax.devices()[:8])
    assert make_mesh((2, 2, 2), jax.devices()[:8]).shape == {"data": 2, "fsdp": 2, "tensor": 2}


def test_constrain_applies_only_inside_a_mesh_context():
    x = jnp.arange(8 * 4, dtype=jnp.float32).reshape(8, 4)
    pin = jax.jit(lambda x: constrain(x * 2, ("batch", "act_vocab")))
    assert "sharding_constraint" not in str(jax.make_jaxpr(pin)(x))
    assert constrain(x, ("batch", None)) is x
    mesh = make_mesh((2, 2, 2), jax.devices()[:8])
    with mesh_context(mesh):
        assert "sharding_constraint" in str(jax.make_jaxpr(pin)(x))
        out = pin(x)
    assert out.sharding.spec == jax.P(("data", "fsdp"), "tensor")
    np.testing.assert_array_equal(out, x * 2)
