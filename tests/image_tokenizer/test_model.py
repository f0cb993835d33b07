import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cm3jax.errors import UserError
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


def test_the_patch_encoder_gives_each_code_from_its_own_patch_alone():
    from flax import nnx

    from cm3jax.image_tokenizer.model import VQGAN, VQGANConfig
    config = VQGANConfig(base_channels=8, z_channels=8, embed_dim=8, codebook_size=64, norm_groups=4, encoder="patch")
    model = VQGAN(config, nnx.Rngs(0))
    images = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1, maxval=1)
    images = images.at[1, 4:8, 8:12].set(images[0, 20:24, 0:4])  # patch (1, 2) of image 1 = patch (5, 0) of image 0
    latents = model.quant_conv(model.encoder(images))
    changed = images.at[0, 0:4, 0:4].set(0.5)
    moved = np.argwhere(np.abs(np.asarray(model.quant_conv(model.encoder(changed)) - latents)).sum(-1) > 0)
    np.testing.assert_array_equal(moved, [[0, 0, 0]])
    _, codes, _ = model.encode(images)
    assert int(codes[1, 1, 2]) == int(codes[0, 5, 0])
    reconstruction, _, _ = model(images)
    assert reconstruction.shape == images.shape
    with pytest.raises(UserError, match="model.encoder must be one of conv, patch"):
        VQGANConfig(encoder="pixel")
