"""Images to VQ-GAN input and back, prepared the way Chameleon's released image tokenizer
prepares them (`chameleon/inference/image_tokenizer.py`, mirrored by Hugging Face's
`ChameleonImageProcessor`):

1. transparency (RGBA, LA, PA, palette or grey with a transparent index) is composited onto
   white; every other mode (grey, palette, CMYK, ...) is converted to RGB;
2. the image is resized, keeping its aspect ratio, so its shorter side equals the resolution
   (Lanczos resampling, new sides rounded to the nearest pixel); smaller images are upscaled;
3. the centre resolution x resolution square is cropped (offsets rounded down);
4. a pixel value v in 0..255 becomes v / 127.5 - 1, in [-1, 1].

Two deliberate departures from Chameleon's code, both at most one grey level: the white
composite is rounded to the nearest level (Chameleon truncates), and `postprocess` rounds
(Chameleon truncates, so its decode of an encoded image is darker by up to one level).
"""

from __future__ import annotations

import io
import os
import struct
from typing import Sequence, Union

import numpy as np
from PIL import Image, ImageOps

from cm3jax.errors import UserError

ImageSource = Union[str, os.PathLike, bytes]
RESAMPLING = Image.Resampling.LANCZOS
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """The decoded image in `source` (a path, or the bytes of an image file), turned upright
    as its EXIF orientation says. `name` labels bytes in error messages. Any file that cannot
    be read raises a UserError naming it and what is wrong."""
    label = name or (f"<{len(source)} bytes of image data>" if isinstance(source, bytes) else os.fspath(source))
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as opened:
            opened.load()
            return ImageOps.exif_transpose(opened)
    except FileNotFoundError:
        raise UserError(f"No image file at {label}; check the path.") from None
    except IsADirectoryError:
        raise UserError(f"{label} is a directory, not an image file.") from None
    except PermissionError:
        raise UserError(f"{label} cannot be read (permission denied); check its permissions.") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{label} is not an image file PIL can read (unknown format); "
                        f"convert it to PNG or JPEG, or remove it.") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"{label} is too large to decode safely ({e}); downscale it first.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise UserError(f"{label} could not be decoded: it is truncated or damaged ({e}); "
                        f"re-export or re-download it.") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB image: transparency composited onto white, other modes converted."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_grey(image)
    if "A" in image.getbands() or "transparency" in image.info:
        return _composite_onto_white(image.convert("RGBA"))
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise UserError(f"Images in PIL mode {image.mode!r} cannot be converted to RGB ({e}); "
                        f"save the image as RGB.") from None


def _sixteen_bit_to_grey(image: Image.Image) -> Image.Image:
    """8-bit grey from 16-bit grey (PIL's own conversion clips at 255, turning most pixels white)."""
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.rint(np.clip(values, 0, 65535) / 257).astype(np.uint8), "L")


def _composite_onto_white(image_rgba: Image.Image) -> Image.Image:
    rgba = np.asarray(image_rgba, dtype=np.float64)
    alpha = rgba[..., 3:] / 255
    rgb = rgba[..., :3] * alpha + 255 * (1 - alpha)
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def resize_and_centre_crop(image: Image.Image, resolution: int) -> Image.Image:
    """The centre resolution x resolution square after resizing the shorter side to
    `resolution` (upscaling images smaller than that)."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (round(width * scale), round(height * scale))
    if size != image.size:
        image = image.resize(size, RESAMPLING)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def to_unit_range(pixels_uint8):
    """float32 in [-1, 1] from uint8 pixel values (a NumPy or JAX array): v / 127.5 - 1."""
    return pixels_uint8.astype(np.float32) / np.float32(127.5) - np.float32(1)


def prepare(image: Image.Image, resolution: int) -> np.ndarray:
    """uint8 [R, R, 3]: `image` as RGB, resized and centre-cropped to resolution R (steps 1-3 of
    this module's docstring), what `codec.encode_images` takes. Images smaller than R on their
    shorter side are upscaled."""
    if not isinstance(image, Image.Image):
        raise UserError(f"Image preparation takes a PIL image, got {type(image).__name__}; "
                        f"read files with load_image(path) first.")
    if not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise UserError(f"resolution must be a positive whole number of pixels, got {resolution!r}.")
    if min(image.size) < 1:
        raise UserError(f"The image has no pixels (size {image.size[0]}x{image.size[1]}).")
    return np.asarray(resize_and_centre_crop(to_rgb(image), int(resolution)))


def prepare_batch(images: Sequence[ImageSource | Image.Image], resolution: int) -> np.ndarray:
    """uint8 [N, R, R, 3]: `prepare` of each image, given as a PIL image, a path or bytes."""
    arrays = [prepare(item if isinstance(item, Image.Image) else load_image(item), resolution) for item in images]
    if not arrays:
        return np.zeros((0, resolution, resolution, 3), np.uint8)
    return np.stack(arrays)


def preprocess(image: Image.Image, resolution: int) -> np.ndarray:
    """float32 [R, R, 3] in [-1, 1]: the VQ-GAN input for `image` at resolution R (steps 1-4 of
    this module's docstring)."""
    return to_unit_range(prepare(image, resolution))


def preprocess_batch(images: Sequence[ImageSource | Image.Image], resolution: int) -> np.ndarray:
    """float32 [N, R, R, 3]: `preprocess` of each image, given as a PIL image, a path or bytes."""
    return to_unit_range(prepare_batch(images, resolution))


def postprocess(images_in_unit_range: np.ndarray) -> np.ndarray:
    """uint8 pixels from values in [-1, 1] (clipped, then rounded); any leading shape."""
    values = np.clip(np.asarray(images_in_unit_range, dtype=np.float32), -1, 1)
    return np.rint((values + 1) * np.float32(127.5)).astype(np.uint8)
