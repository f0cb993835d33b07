"""uint8 RGB images <-> code grids with a trained VQGAN: jitted, batched, and sharded over the
batch on every local device (one device works the same)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.sharding import make_mesh

DEFAULT_BATCH = 256


def to_unit_range(images_uint8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images_unit: jax.Array) -> jax.Array:
    """float [-1, 1] -> uint8, rounded to the nearest level and clipped."""
    return jnp.clip(jnp.round((images_unit + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


@functools.lru_cache(maxsize=None)
def batch_sharding() -> NamedSharding:
    """Rows split over this process's devices (a host-local helper: in a multi-process run each
    process encodes and decodes its own images)."""
    mesh = make_mesh((jax.local_device_count(), 1, 1), jax.local_devices())
    return NamedSharding(mesh, PartitionSpec("data"))


@functools.lru_cache(maxsize=None)
def replicated() -> NamedSharding:
    return NamedSharding(batch_sharding().mesh, PartitionSpec())


@functools.partial(jax.jit, static_argnums=0)
def _encode(graphdef, state, images_BHW3: jax.Array) -> jax.Array:
    _, codes, _ = nnx.merge(graphdef, state).encode(to_unit_range(images_BHW3))
    return codes


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, state, codes_Bhw: jax.Array) -> jax.Array:
    return to_uint8(nnx.merge(graphdef, state).decode_codes(codes_Bhw))


def _batched(fn, model: VQGAN, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Runs `fn` over fixed-size, device-divisible chunks (the last one padded), so one
    compilation serves any number of inputs."""
    devices = jax.local_device_count()
    chunk = min(batch_size, len(inputs))
    chunk = -(-chunk // devices) * devices
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, replicated())
    outputs = []
    for start in range(0, len(inputs), chunk):
        part = inputs[start:start + chunk]
        padded = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)]) if len(part) < chunk else part
        out = fn(graphdef, state, jax.device_put(padded, batch_sharding()))
        outputs.append(np.asarray(out)[:len(part)])
    return np.concatenate(outputs)


def encode_images(model: VQGAN, images_uint8_NHW3, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """int32[N, h, w]: the code grid of each uint8 RGB image (h = w = side / downsample factor)."""
    images = np.asarray(images_uint8_NHW3)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"encode_images takes uint8 RGB images [N, H, W, 3]; got {images.dtype} {images.shape}. "
                        f"Convert with np.clip(x, 0, 255).astype(np.uint8).")
    factor = model.config.downsample_factor
    if images.shape[1] % factor or images.shape[2] % factor:
        raise UserError(f"Image sides {images.shape[1:3]} must be multiples of the tokenizer's downsampling "
                        f"factor {factor}; resize or crop them first.")
    if len(images) == 0:
        return np.zeros((0, images.shape[1] // factor, images.shape[2] // factor), np.int32)
    return _batched(_encode, model, images, batch_size)


def decode_codes(model: VQGAN, codes_Nhw, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """uint8[N, H, W, 3]: the images of code grids."""
    codes = np.asarray(codes_Nhw)
    size = model.config.codebook_size
    if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"decode_codes takes integer code grids [N, h, w]; got {codes.dtype} {codes.shape}.")
    if codes.size and (codes.min() < 0 or codes.max() >= size):
        raise UserError(f"Codes must lie in [0, {size}) for this tokenizer; got values in "
                        f"[{codes.min()}, {codes.max()}]. Were they made by another tokenizer?")
    factor = model.config.downsample_factor
    if len(codes) == 0:
        return np.zeros((0, codes.shape[1] * factor, codes.shape[2] * factor, 3), np.uint8)
    return _batched(_decode, model, codes.astype(np.int32), batch_size)
