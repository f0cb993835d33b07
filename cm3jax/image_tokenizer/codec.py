"""uint8 RGB images <-> code grids with a trained VQGAN: jitted, in batches padded to one size
(so one compilation serves any number of images), split over the batch on every local device
(one device works the same).

    codes = encode_images(model, images_uint8)      # int32 [N, h, w]
    images = decode_codes(model, codes)              # uint8 [N, H, W, 3]

For a stream of batches, `ImageEncoder.dispatch` returns as soon as the work is queued (JAX
dispatches asynchronously), so the next batch can be read while the device encodes this one.
"""

from __future__ import annotations

import abc
import collections
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.preprocess import to_unit_range
from cm3jax.sharding import make_mesh

DEFAULT_BATCH = 256
_traces: collections.Counter = collections.Counter()  # traces of each jitted function (each one compiles)


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
    _traces[_encode] += 1
    _, codes, _ = nnx.merge(graphdef, state).encode(to_unit_range(images_BHW3))
    return codes


@functools.partial(jax.jit, static_argnums=0)
def _decode(graphdef, state, codes_Bhw: jax.Array) -> jax.Array:
    _traces[_decode] += 1
    return to_uint8(nnx.merge(graphdef, state).decode_codes(codes_Bhw))


class _Batched(abc.ABC):
    """`_fn(graphdef, state, batch)` of the model as it was when this was made, over batches
    padded to `batch_size` (rounded up to a multiple of the local devices)."""
    _fn: Callable
    _output_dtype: type

    def __init__(self, model: VQGAN, batch_size: int = DEFAULT_BATCH):
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}.")
        devices = jax.local_device_count()
        self.batch_size = -(-batch_size // devices) * devices
        self.config = model.config
        self.compilations = 0  # compilations this object's calls needed (0 where an earlier call made them)
        self._graphdef, state = nnx.split(model)
        self._state = jax.device_put(state, replicated())

    @abc.abstractmethod
    def check(self, inputs) -> np.ndarray:
        """`inputs` as an array, or a UserError saying what is wrong with them."""

    @abc.abstractmethod
    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one output, given the shape of one input."""

    def dispatch(self, inputs) -> jax.Array:
        """The outputs of up to `batch_size` inputs, [batch_size, ...], still being computed:
        rows past len(inputs) are padding. `np.asarray` waits for them."""
        inputs = self.check(inputs)
        n = len(inputs)
        if n > self.batch_size:
            raise UserError(f"{n} inputs passed to a batch of {self.batch_size}; split them (or call this "
                            f"object on all of them).")
        padded = np.zeros((self.batch_size, *inputs.shape[1:]), inputs.dtype)
        padded[:n] = inputs
        before = _traces[self._fn]
        with jax.set_mesh(batch_sharding().mesh):  # host-local, whatever (global) mesh the caller has set
            outputs = self._fn(self._graphdef, self._state, jax.device_put(padded, batch_sharding()))
        self.compilations += _traces[self._fn] - before
        return outputs

    def __call__(self, inputs) -> np.ndarray:
        """The outputs of every input, batch by batch, each batch dispatched before the previous
        one is read back."""
        inputs = self.check(inputs)
        results, pending = [], None
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start:start + self.batch_size]
            dispatched = (self.dispatch(batch), len(batch))
            if pending is not None:
                results.append(np.asarray(pending[0])[:pending[1]])
            pending = dispatched
        if pending is None:
            return np.zeros((0, *self.output_shape(inputs.shape[1:])), self._output_dtype)
        results.append(np.asarray(pending[0])[:pending[1]])
        return np.concatenate(results)


class ImageEncoder(_Batched):
    """Codes of uint8 RGB images [N, H, W, 3] (H and W multiples of the downsampling factor)."""
    _fn, _output_dtype = staticmethod(_encode), np.int32

    def check(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(f"Images to encode must be uint8 RGB [N, H, W, 3]; got {images.dtype} {images.shape}. "
                            f"Convert with np.clip(x, 0, 255).astype(np.uint8), or prepare files with "
                            f"cm3jax.image_tokenizer.preprocess.prepare.")
        factor = self.config.downsample_factor
        if images.shape[1] % factor or images.shape[2] % factor:
            raise UserError(f"Image sides {images.shape[1:3]} must be multiples of the tokenizer's downsampling "
                            f"factor {factor}; resize or crop them first.")
        return images

    def output_shape(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """(h, w): the code grid of an image of shape (H, W, 3)."""
        factor = self.config.downsample_factor
        return image_shape[0] // factor, image_shape[1] // factor


class CodeDecoder(_Batched):
    """uint8 RGB images of code grids [N, h, w]."""
    _fn, _output_dtype = staticmethod(_decode), np.uint8

    def check(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        size = self.config.codebook_size
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
            raise UserError(f"Codes to decode must be integer grids [N, h, w]; got {codes.dtype} {codes.shape}.")
        if codes.size and (codes.min() < 0 or codes.max() >= size):
            raise UserError(f"Codes must lie in [0, {size}) for this tokenizer; got values in "
                            f"[{codes.min()}, {codes.max()}]. Were they made by another tokenizer?")
        return codes.astype(np.int32)

    def output_shape(self, grid_shape: tuple[int, ...]) -> tuple[int, int, int]:
        factor = self.config.downsample_factor
        return grid_shape[0] * factor, grid_shape[1] * factor, 3


def encode_images(model: VQGAN, images_uint8_NHW3, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """int32[N, h, w]: the code grid of each uint8 RGB image (h = H / downsampling factor)."""
    return ImageEncoder(model, max(1, min(batch_size, len(images_uint8_NHW3))))(images_uint8_NHW3)


def decode_codes(model: VQGAN, codes_Nhw, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """uint8[N, H, W, 3]: the images of code grids."""
    return CodeDecoder(model, max(1, min(batch_size, len(codes_Nhw))))(codes_Nhw)


def code_looks(model: VQGAN, grid: int = 8, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
    """uint8[K, f, f, 3]: what each code draws, the middle patch of a grid x grid field of that
    code alone (f the downsampling factor)."""
    config = model.config
    grid = min(grid, config.grid_size())
    codes_Khw = np.broadcast_to(np.arange(config.codebook_size, dtype=np.int32)[:, None, None],
                                (config.codebook_size, grid, grid))
    f, middle = config.downsample_factor, grid // 2 * config.downsample_factor
    return decode_codes(model, codes_Khw, batch_size)[:, middle:middle + f, middle:middle + f]
