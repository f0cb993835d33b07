import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cm3jax.image_tokenizer.model import nearest_entries


@pytest.mark.parametrize("vectors, entries", [(1, 7), (70, 96), (130, 1024), (64, 8192)])
def test_nearest_entries_equal_argmin_of_distances_first_on_ties(vectors, entries):
    z_ND = jax.random.normal(jax.random.key(0), (vectors, 16))
    e_KD = jax.random.normal(jax.random.key(1), (entries, 16))
    e_KD = e_KD.at[entries - 1].set(e_KD[0])  # a duplicated entry: the first copy must win
    z_ND = z_ND.at[0].set(e_KD[0])
    distances = jnp.sum(z_ND ** 2, -1, keepdims=True) + jnp.sum(e_KD ** 2, -1) - 2 * z_ND @ e_KD.T
    got = jax.jit(nearest_entries)(z_ND, e_KD)
    assert got.dtype == jnp.int32 and got.shape == (vectors,)
    np.testing.assert_array_equal(got, jnp.argmin(distances, axis=-1))
    assert int(got[0]) == 0
