import jax.numpy as jnp
import pytest
from flax import nnx

from cm3jax.image_tokenizer.losses import (PatchDiscriminator, discriminator_hinge_loss, generator_adversarial_loss,
                                           l1_loss, l2_loss, margin_loss, reconstruction_loss)


def test_pixel_losses_on_known_errors():
    target = jnp.zeros((1, 2, 2, 3))
    reconstruction = target.at[0, 0, 0, :].set(jnp.array([0.6, 0.8, 0.0]))  # one pixel 1.0 away
    assert float(l1_loss(reconstruction, target)) == pytest.approx(1.4 / 12)
    assert float(l2_loss(reconstruction, target)) == pytest.approx(1.0 / 12)
    assert float(margin_loss(reconstruction, target, 0.5)) == pytest.approx(0.25 / 4)  # (1.0 - 0.5)^2 over 4 pixels
    assert float(margin_loss(reconstruction, target, 1.5)) == 0.0


def test_the_margin_loss_counts_only_pixels_beyond_the_margin():
    target = jnp.zeros((1, 2, 2, 3))
    near, far = target.at[..., 0].set(0.1), target.at[..., 0].set(0.5)
    assert float(margin_loss(near, target, 0.2)) == 0.0
    assert float(margin_loss(far, target, 0.2)) == pytest.approx(0.09, rel=1e-4)


def test_the_reconstruction_loss_is_the_weighted_sum_of_its_terms():
    target = jnp.zeros((1, 2, 2, 3))
    far = target.at[..., 0].set(0.5)
    total, terms = reconstruction_loss(far, target, 1.0, 2.0, 10.0, 0.2)
    assert float(terms["l1"]) == pytest.approx(0.5 / 3) and float(terms["l2"]) == pytest.approx(0.25 / 3)
    assert float(total) == pytest.approx(0.5 / 3 + 2 * 0.25 / 3 + 10 * 0.09, rel=1e-5)


def test_hinge_and_generator_losses():
    assert float(discriminator_hinge_loss(jnp.full(4, 2.0), jnp.full(4, -2.0))) == 0.0
    assert float(discriminator_hinge_loss(jnp.zeros(4), jnp.zeros(4))) == 1.0
    assert float(discriminator_hinge_loss(jnp.array([0.5]), jnp.array([0.5]))) == pytest.approx(0.5 * (0.5 + 1.5))
    assert float(generator_adversarial_loss(jnp.array([1.0, 3.0]))) == -2.0


def test_the_patch_discriminator_gives_one_logit_per_patch():
    critic = PatchDiscriminator(3, 8, 2, rngs=nnx.Rngs(0))
    # 32 -> 16 (conv_in, stride 2) -> 8 (stride 2) -> 7 (stride 1) -> 6 (conv_out): 4x4 kernels, padding 1
    assert critic(jnp.zeros((2, 32, 32, 3))).shape == (2, 6, 6, 1)
    assert PatchDiscriminator(3, 8, 3, rngs=nnx.Rngs(0))(jnp.zeros((1, 32, 32, 3))).shape == (1, 2, 2, 1)
