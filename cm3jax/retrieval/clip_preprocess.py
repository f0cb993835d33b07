"""CLIP's image preprocessing, as CLIP defines it (and transformers' CLIPImageProcessor does):

1. RGB: grey is repeated over three channels, transparency is composited onto white;
2. the shorter side is resized to the model's image size S with PIL's bicubic filter (the
   longer side becomes int(S * long / short)); an image already S on its shorter side is
   left as it is;
3. the centre S x S square is cropped (offsets rounded down);
4. pixels are scaled to [0, 1] and normalised per channel with CLIP's mean and std.

Out come float32 [S, S, 3] arrays, channels last, as the NNX CLIP takes them.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
from PIL import Image

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.preprocess import load_image, to_rgb

MEAN = np.array((0.48145466, 0.4578275, 0.40821073), np.float32)
STD = np.array((0.26862954, 0.26130258, 0.27577711), np.float32)
RESAMPLING = Image.Resampling.BICUBIC

ImageInput = Union[np.ndarray, Image.Image, str, os.PathLike, bytes]


def array_to_rgb(image: np.ndarray, label: str = "image") -> np.ndarray:
    """uint8 [H, W, 3] from a uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (RGBA onto white) array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(f"{label} has dtype {image.dtype}; give uint8 pixels in 0..255 (e.g. np.asarray(pil_image)).")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise UserError(f"{label} has shape {image.shape}; give height x width x channels with 1, 3 or 4 channels "
                        f"(grey, RGB, RGBA), channels last.")
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    if image.shape[-1] == 4:
        alpha = image[..., 3:].astype(np.float64) / 255
        return np.rint(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return image


def resize_and_centre_crop(rgb_HW3: np.ndarray, size: int) -> np.ndarray:
    """uint8 [S, S, 3]: shorter side to `size` (bicubic), then the centre square."""
    height, width = rgb_HW3.shape[:2]
    if min(height, width) != size:
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        rgb_HW3 = np.asarray(Image.fromarray(rgb_HW3, "RGB").resize((new_w, new_h), RESAMPLING))
        height, width = new_h, new_w
    top, left = (height - size) // 2, (width - size) // 2
    return rgb_HW3[top:top + size, left:left + size]


def normalize(pixels_uint8: np.ndarray) -> np.ndarray:
    """float32 (v / 255 - mean) / std per channel, any leading shape."""
    return (np.asarray(pixels_uint8, np.float32) / np.float32(255) - MEAN) / STD


def _as_rgb_array(image: ImageInput, label: str) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, label)
    if not isinstance(image, Image.Image):
        image = load_image(image)
    return np.asarray(to_rgb(image))


def preprocess(image: ImageInput, size: int) -> np.ndarray:
    """float32 [S, S, 3]: the CLIP input for one image (a uint8 array, a PIL image, a path or
    the bytes of an image file). Unreadable files raise a UserError naming them."""
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise UserError(f"The CLIP image size must be a positive whole number of pixels, got {size!r}.")
    return normalize(resize_and_centre_crop(_as_rgb_array(image, "The image"), int(size)))


def preprocess_batch(images: np.ndarray | Sequence[ImageInput], size: int) -> np.ndarray:
    """float32 [N, S, S, 3]. A uint8 [N, H, W, C] array or a list of single images; a batch
    already S x S RGB is only normalised."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise UserError(f"A batch of images has shape {images.shape}; give uint8 [N, H, W, C] "
                            f"(or a list of single images).")
        if images.dtype == np.uint8 and images.shape[1:] == (size, size, 3):
            return normalize(images)
    arrays = [preprocess(image, size) for image in images]
    return np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.float32)
