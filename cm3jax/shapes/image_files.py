"""Image sets as .npz files holding one uint8 array `images` [N, R, R, 3]."""

from __future__ import annotations

import zipfile

import numpy as np

from cm3jax.fileio import atomic_write
from cm3jax.shapes.detect import check_image
from cm3jax.shapes.spec import ShapesError

IMAGES_KEY = "images"


def write_images(path: str, images_NRR3: np.ndarray) -> None:
    images = np.asarray(images_NRR3)
    if images.ndim != 4:
        raise ShapesError(f"images must be [N, R, R, 3], got shape {images.shape}.")
    for i, image in enumerate(images[:1]):
        check_image(image, f"image {i}")
    atomic_write(path, lambda f: np.savez_compressed(f, **{IMAGES_KEY: images}))


def read_images(path: str) -> np.ndarray:
    """uint8[N, R, R, 3] from an .npz holding one array `images`; errors name the problem."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if IMAGES_KEY not in data.files:
                raise ShapesError(f"{path} holds {data.files}, not an array named {IMAGES_KEY!r}; "
                                  f"save with np.savez(path, images=array).")
            images = data[IMAGES_KEY]
    except FileNotFoundError:
        raise ShapesError(f"No images file at {path}.") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ShapesError(f"{path} is not a readable .npz file ({e}).") from None
    if images.ndim != 4:
        raise ShapesError(f"{path}: images have shape {images.shape}; expected [N, R, R, 3].")
    if images.dtype != np.uint8:
        raise ShapesError(f"{path}: images have dtype {images.dtype}; expected uint8.")
    if len(images):
        check_image(images[0], f"{path} image 0")
    return images
