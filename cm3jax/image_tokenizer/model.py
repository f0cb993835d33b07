"""The VQ-GAN image tokenizer in Flax NNX, layer for layer the taming-transformers `VQModel`
that Chameleon ships (and that Hugging Face's `ChameleonVQVAE` ports), so the same code
trains on Shapes and runs imported Chameleon weights.

Images are NHWC floats in [-1, 1]. An image of side R becomes an (R/f) x (R/f) grid of
codes, f = 2 ** (len(channel_multipliers) - 1), read row by row.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from cm3jax.errors import UserError

ENCODERS = ("conv", "patch")


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = 64
    embed_dim: int = 64
    codebook_size: int = 1024
    norm_groups: int = 32
    beta: float = 0.25  # commitment weight
    # "conv": taming's encoder, whose receptive field spans neighbouring patches; "patch": each
    # code from its own patch's pixels alone (an MLP over the patch), so equal patches always
    # get equal codes and a code carries nothing its patch does not show
    encoder: str = "conv"
    patch_width: int = 64  # the patch encoder's MLP width

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise UserError(f"model.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}.")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    def grid_size(self, resolution: int | None = None) -> int:
        return (resolution or self.resolution) // self.downsample_factor

    @classmethod
    def chameleon(cls) -> "VQGANConfig":
        """Chameleon's released tokenizer: 512x512 -> 32x32 codes of 8192."""
        return cls(resolution=512, base_channels=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
                   attn_resolutions=(), z_channels=256, embed_dim=256, codebook_size=8192)


def _norm(channels: int, config: VQGANConfig, rngs: nnx.Rngs) -> nnx.GroupNorm:
    groups = math.gcd(config.norm_groups, channels)
    return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-6, use_fast_variance=False, rngs=rngs)


def _conv(cin: int, cout: int, kernel: int, rngs: nnx.Rngs, strides: int = 1, padding="SAME") -> nnx.Conv:
    return nnx.Conv(cin, cout, (kernel, kernel), strides=strides, padding=padding, rngs=rngs)


class ResnetBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, config: VQGANConfig, rngs: nnx.Rngs):
        self.norm1 = _norm(cin, config, rngs)
        self.conv1 = _conv(cin, cout, 3, rngs)
        self.norm2 = _norm(cout, config, rngs)
        self.conv2 = _conv(cout, cout, 3, rngs)
        self.nin_shortcut = _conv(cin, cout, 1, rngs) if cin != cout else None

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        h = self.conv1(nnx.swish(self.norm1(x_BHWC)))
        h = self.conv2(nnx.swish(self.norm2(h)))
        shortcut = self.nin_shortcut(x_BHWC) if self.nin_shortcut is not None else x_BHWC
        return shortcut + h


class AttnBlock(nnx.Module):
    """Single-head self-attention over all positions of the feature map."""

    def __init__(self, channels: int, config: VQGANConfig, rngs: nnx.Rngs):
        self.norm = _norm(channels, config, rngs)
        self.q = _conv(channels, channels, 1, rngs)
        self.k = _conv(channels, channels, 1, rngs)
        self.v = _conv(channels, channels, 1, rngs)
        self.proj_out = _conv(channels, channels, 1, rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        b, h, w, c = x_BHWC.shape
        y = self.norm(x_BHWC)
        q, k, v = (f(y).reshape(b, h * w, c) for f in (self.q, self.k, self.v))
        weights_BQK = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) * c ** -0.5, axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", weights_BQK, v).reshape(b, h, w, c)
        return x_BHWC + self.proj_out(out)


class Downsample(nnx.Module):
    """Pad right and bottom by one, then a stride-2 3x3 conv (taming's asymmetric padding)."""

    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, rngs, strides=2, padding="VALID")

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return self.conv(jnp.pad(x_BHWC, ((0, 0), (0, 1), (0, 1), (0, 0))))


class Upsample(nnx.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int, rngs: nnx.Rngs):
        self.conv = _conv(channels, channels, 3, rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2))


class Level(nnx.Module):
    """One resolution of the encoder or decoder: residual blocks (each with optional attention)
    and an optional resampling."""

    def __init__(self, blocks: list[ResnetBlock], attns: list[AttnBlock], resample: nnx.Module | None):
        self.block = nnx.List(blocks)
        self.attn = nnx.List(attns)
        self.resample = resample

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return self.resample(x) if self.resample is not None else x


class Mid(nnx.Module):
    def __init__(self, channels: int, config: VQGANConfig, rngs: nnx.Rngs):
        self.block_1 = ResnetBlock(channels, channels, config, rngs)
        self.attn_1 = AttnBlock(channels, config, rngs)
        self.block_2 = ResnetBlock(channels, channels, config, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.block_2(self.attn_1(self.block_1(x)))


class PixelEncoder(nnx.Module):
    """Pixels [B, R, R, 3] in [-1, 1] -> latents [B, R/f, R/f, z_channels] (taming's Encoder)."""

    def __init__(self, config: VQGANConfig, rngs: nnx.Rngs):
        ch, mults = config.base_channels, config.channel_multipliers
        self.conv_in = _conv(config.in_channels, ch, 3, rngs)
        levels, resolution, cin = [], config.resolution, ch
        for i, mult in enumerate(mults):
            cout = ch * mult
            blocks, attns = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(cin, cout, config, rngs))
                cin = cout
                if resolution in config.attn_resolutions:
                    attns.append(AttnBlock(cin, config, rngs))
            last = i == len(mults) - 1
            levels.append(Level(blocks, attns, None if last else Downsample(cin, rngs)))
            resolution //= 1 if last else 2
        self.down = nnx.List(levels)
        self.mid = Mid(cin, config, rngs)
        self.norm_out = _norm(cin, config, rngs)
        self.conv_out = _conv(cin, config.z_channels, 3, rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        h = self.conv_in(x_BHWC)
        for level in self.down:
            h = level(h)
        return self.conv_out(nnx.swish(self.norm_out(self.mid(h))))


class PatchEncoder(nnx.Module):
    """Pixels [B, R, R, 3] -> latents [B, R/f, R/f, z_channels], each latent a function of its
    own f x f patch only: space-to-depth, then a residual MLP of width patch_width."""

    def __init__(self, config: VQGANConfig, rngs: nnx.Rngs):
        f, width = config.downsample_factor, config.patch_width
        self.factor = f
        self.dense_in = nnx.Linear(f * f * config.in_channels, width, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(config.num_res_blocks + 1)])
        self.dense_out = nnx.Linear(width, config.z_channels, rngs=rngs)

    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        b, height, width, c = x_BHWC.shape
        f = self.factor
        patches = x_BHWC.reshape(b, height // f, f, width // f, f, c).transpose(0, 1, 3, 2, 4, 5)
        h = self.dense_in(patches.reshape(b, height // f, width // f, f * f * c))
        for layer in self.hidden:
            h = h + layer(nnx.swish(h))
        return self.dense_out(nnx.swish(h))


class PixelDecoder(nnx.Module):
    """Quantized latents -> pixels (taming's Decoder). Levels are stored lowest resolution last
    (`up[0]` is the full-resolution level), as in taming, and run from the last to the first."""

    def __init__(self, config: VQGANConfig, rngs: nnx.Rngs):
        ch, mults = config.base_channels, config.channel_multipliers
        cin = ch * mults[-1]
        resolution = config.grid_size()
        self.conv_in = _conv(config.z_channels, cin, 3, rngs)
        self.mid = Mid(cin, config, rngs)
        levels = []
        for i in reversed(range(len(mults))):
            cout = ch * mults[i]
            blocks, attns = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, cout, config, rngs))
                cin = cout
                if resolution in config.attn_resolutions:
                    attns.append(AttnBlock(cin, config, rngs))
            levels.insert(0, Level(blocks, attns, Upsample(cin, rngs) if i != 0 else None))
            resolution *= 1 if i == 0 else 2
        self.up = nnx.List(levels)
        self.norm_out = _norm(cin, config, rngs)
        self.conv_out = _conv(cin, config.out_channels, 3, rngs)

    def __call__(self, z_BhwC: jax.Array) -> jax.Array:
        h = self.mid(self.conv_in(z_BhwC))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(nnx.swish(self.norm_out(h)))


NEAREST_ROWS = 64  # vectors per block of the nearest-entry search: a [64, K] distance block stays in cache


def _first_argmin(d_NK: jax.Array) -> jax.Array:
    """jnp.argmin over the last axis in two short passes (XLA:CPU's one-pass argmin is ~10x
    slower on long rows): the first group of 128 holding the row's minimum, then the first
    minimum inside it. The same index as jnp.argmin."""
    n, k = d_NK.shape
    group = math.gcd(k, 128)
    if group < 16:
        return jnp.argmin(d_NK, axis=-1)
    d_NGC = d_NK.reshape(n, k // group, group)
    g_N = jnp.argmin(jnp.min(d_NGC, axis=-1), axis=-1)
    within_NC = jnp.take_along_axis(d_NGC, g_N[:, None, None], axis=1)[:, 0]
    return g_N * group + jnp.argmin(within_NC, axis=-1)


def nearest_entries(z_ND: jax.Array, e_KD: jax.Array) -> jax.Array:
    """int32[N]: for each vector, the index of the entry at the least squared distance."""
    n, width = z_ND.shape
    blocks = -(-n // NEAREST_ROWS)
    z_BRD = jnp.pad(z_ND, ((0, blocks * NEAREST_ROWS - n), (0, 0))).reshape(blocks, NEAREST_ROWS, width)
    e_squared_K = jnp.sum(e_KD ** 2, -1)

    def block(z_RD: jax.Array) -> jax.Array:
        d_RK = jnp.sum(z_RD ** 2, -1, keepdims=True) + e_squared_K - 2 * jnp.einsum("rd,kd->rk", z_RD, e_KD)
        return _first_argmin(d_RK)

    return jax.lax.map(block, z_BRD).reshape(-1)[:n].astype(jnp.int32)


class VectorQuantizer(nnx.Module):
    """Nearest-codebook-entry quantisation with straight-through gradients (taming's
    VectorQuantizer2 with legacy=False, the VQ-VAE loss: codebook term + beta * commitment term;
    taming's default legacy=True and HF put beta on the codebook term instead)."""

    def __init__(self, config: VQGANConfig, rngs: nnx.Rngs):
        k = config.codebook_size
        self.embedding = nnx.Param(jax.random.uniform(rngs.params(), (k, config.embed_dim), minval=-1 / k, maxval=1 / k))
        self.beta = config.beta

    def codes(self, z_BhwD: jax.Array) -> jax.Array:
        """int32[B, h, w]: index of the nearest entry of each vector (the first, on ties)."""
        return nearest_entries(z_BhwD.reshape(-1, z_BhwD.shape[-1]), self.embedding[...]).reshape(z_BhwD.shape[:-1])

    def lookup(self, codes_Bhw: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], codes_Bhw, axis=0)

    def __call__(self, z_BhwD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z_q with straight-through gradients, codes, quantisation loss)."""
        codes = self.codes(z_BhwD)
        z_q = self.lookup(codes)
        loss = (jnp.mean((z_q - jax.lax.stop_gradient(z_BhwD)) ** 2)
                + self.beta * jnp.mean((jax.lax.stop_gradient(z_q) - z_BhwD) ** 2))
        return z_BhwD + jax.lax.stop_gradient(z_q - z_BhwD), codes, loss


class VQGAN(nnx.Module):
    def __init__(self, config: VQGANConfig, rngs: nnx.Rngs):
        self.config = config
        self.encoder = PixelEncoder(config, rngs) if config.encoder == "conv" else PatchEncoder(config, rngs)
        self.quant_conv = _conv(config.z_channels, config.embed_dim, 1, rngs)
        self.quantize = VectorQuantizer(config, rngs)
        self.post_quant_conv = _conv(config.embed_dim, config.z_channels, 1, rngs)
        self.decoder = PixelDecoder(config, rngs)

    def encode(self, images_BHWC: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(z_q [B, h, w, D], codes int32 [B, h, w], quantisation loss) of images in [-1, 1]."""
        return self.quantize(self.quant_conv(self.encoder(images_BHWC)))

    def decode(self, z_q_BhwD: jax.Array) -> jax.Array:
        return self.decoder(self.post_quant_conv(z_q_BhwD))

    def decode_codes(self, codes_Bhw: jax.Array) -> jax.Array:
        """Images in (about) [-1, 1] from code grids."""
        return self.decode(self.quantize.lookup(codes_Bhw))

    def __call__(self, images_BHWC: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(reconstruction, codes, quantisation loss)."""
        z_q, codes, loss = self.encode(images_BHWC)
        return self.decode(z_q), codes, loss
