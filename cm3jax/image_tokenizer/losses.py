"""Training losses of the VQ-GAN: pixel reconstruction terms and an optional PatchGAN critic
with hinge losses (the taming recipe without the perceptual term, which needs ImageNet
weights; Shapes images are scored pixel by pixel anyway)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def l1_loss(reconstruction_BHWC: jax.Array, target_BHWC: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(reconstruction_BHWC - target_BHWC))


def l2_loss(reconstruction_BHWC: jax.Array, target_BHWC: jax.Array) -> jax.Array:
    return jnp.mean((reconstruction_BHWC - target_BHWC) ** 2)


def margin_loss(reconstruction_BHWC: jax.Array, target_BHWC: jax.Array, margin: float) -> jax.Array:
    """Mean over pixels of relu(|rgb error| - margin)^2: only pixels further than `margin` from
    their true colour count. The Shapes scorer snaps colours to a palette, so pixels inside the
    margin are already right, and the gradient goes to the edge pixels a plain L2 averages
    away; on Shapes it reaches exact reconstructions several times faster."""
    distance_BHW = jnp.sqrt(jnp.sum((reconstruction_BHWC - target_BHWC) ** 2, axis=-1) + 1e-12)
    return jnp.mean(jax.nn.relu(distance_BHW - margin) ** 2)


def reconstruction_loss(reconstruction_BHWC: jax.Array, target_BHWC: jax.Array, l1_weight: float,
                        l2_weight: float, margin_weight: float = 0.0,
                        margin: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted L1 + L2 + margin loss in [-1, 1] pixel units, and the terms for logging."""
    terms = {"l1": l1_loss(reconstruction_BHWC, target_BHWC), "l2": l2_loss(reconstruction_BHWC, target_BHWC),
             "margin": margin_loss(reconstruction_BHWC, target_BHWC, margin)}
    total = l1_weight * terms["l1"] + l2_weight * terms["l2"] + margin_weight * terms["margin"]
    return total, terms


class PatchDiscriminator(nnx.Module):
    """PatchGAN critic (pix2pix / taming's NLayerDiscriminator): stride-2 4x4 convolutions, then
    two stride-1 ones ending in one logit per overlapping patch. GroupNorm stands in for
    BatchNorm so the critic is a pure function of its parameters."""

    def __init__(self, in_channels: int = 3, base_channels: int = 32, num_layers: int = 2, *, rngs: nnx.Rngs):
        def conv(cin: int, cout: int, strides: int) -> nnx.Conv:
            return nnx.Conv(cin, cout, (4, 4), strides=strides, padding=((1, 1), (1, 1)), rngs=rngs)

        self.conv_in = conv(in_channels, base_channels, 2)
        convs, norms = [], []
        cin = base_channels
        for i in range(1, num_layers + 1):
            cout = base_channels * min(2 ** i, 8)
            convs.append(conv(cin, cout, 2 if i < num_layers else 1))
            norms.append(nnx.GroupNorm(cout, num_groups=min(32, cout), rngs=rngs))
            cin = cout
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.conv_out = conv(cin, 1, 1)

    def __call__(self, images_BHWC: jax.Array) -> jax.Array:
        """Logits [B, h, w, 1], one per patch."""
        h = nnx.leaky_relu(self.conv_in(images_BHWC), 0.2)
        for conv, norm in zip(self.convs, self.norms):
            h = nnx.leaky_relu(norm(conv(h)), 0.2)
        return self.conv_out(h)


def discriminator_hinge_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real_logits)) + jnp.mean(jax.nn.relu(1.0 + fake_logits)))


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
    return -jnp.mean(fake_logits)
