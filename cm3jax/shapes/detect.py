"""Reads an image back into a scene: the deterministic detector behind every Shapes score."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from cm3jax.shapes import spec
from cm3jax.shapes.emblems import EMBLEM_NAMES, render_emblem
from cm3jax.shapes.render import shape_mask
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import ShapesError

NOISE = -1
EMBLEM_MATCH = 0.9  # share of pixels that must agree with an emblem for the image to be that emblem
_BACKGROUND_LABELS = [spec.PALETTE_NAMES.index(b) for b in spec.BACKGROUNDS]
_PALETTE_F = spec.PALETTE_RGB.astype(np.float32)


def check_image(image, what: str = "image") -> np.ndarray:
    """uint8[R, R, 3] with R a supported resolution, else a clear error."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ShapesError(f"{what} has dtype {image.dtype}; Shapes images are uint8 RGB "
                          f"(convert with np.clip(x, 0, 255).astype(np.uint8)).")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ShapesError(f"{what} has shape {image.shape}; expected [R, R, 3] with R in {spec.RESOLUTIONS}.")
    spec.check_resolution(image.shape[0])
    return image


def snap(image_RR3: np.ndarray) -> np.ndarray:
    """int[R, R]: index into spec.PALETTE_NAMES of each pixel's nearest colour within
    SNAP_DISTANCE, or NOISE."""
    pixels = image_RR3.astype(np.float32)
    d2 = ((pixels[..., None, :] - _PALETTE_F) ** 2).sum(-1)
    labels = d2.argmin(-1)
    return np.where(d2.min(-1) <= spec.SNAP_DISTANCE ** 2, labels, NOISE)


@functools.lru_cache(maxsize=None)
def _emblem_labels(resolution: int) -> np.ndarray:
    """int[32, R, R]: every emblem's snapped reference pattern."""
    labels = np.stack([snap(render_emblem(name, resolution)) for name in EMBLEM_NAMES])
    labels.setflags(write=False)
    return labels


def emblem_pixel_accuracy(labels_RR: np.ndarray, emblem: str) -> float:
    reference = _emblem_labels(labels_RR.shape[0])[EMBLEM_NAMES.index(emblem)]
    return float((labels_RR == reference).mean())


def _best_emblem(labels_RR: np.ndarray) -> tuple[str, float]:
    agreement = (_emblem_labels(labels_RR.shape[0]) == labels_RR).mean(axis=(1, 2))
    best = int(agreement.argmax())
    return EMBLEM_NAMES[best], float(agreement[best])


def _fit_shape(component_RR: np.ndarray, x0: int, y0: int, side_px: int, scale: int) -> str:
    """The shape whose mask, centred on the component's box, overlaps it best (IoU).
    `side_px` is a multiple of `scale`."""
    size = component_RR.shape[0]
    best, best_iou = spec.SHAPES[0], -1.0
    for shape in spec.SHAPES:
        mask = shape_mask(shape, side_px // scale, scale)
        canvas = np.zeros_like(component_RR)
        ys, xs = slice(max(y0, 0), min(y0 + side_px, size)), slice(max(x0, 0), min(x0 + side_px, size))
        canvas[ys, xs] = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        iou = (canvas & component_RR).sum() / max((canvas | component_RR).sum(), 1)
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def detect(image, scene_id: str = "") -> Scene:
    """The scene an image shows: an emblem, or a background with its objects.

    Background: the most frequent background colour. Objects: 4-connected components of
    each object colour (specks under 4 base pixels are noise); size from the box, shape
    by the best-overlapping mask at that size, position from the box centre.
    """
    image = check_image(image)
    resolution = image.shape[0]
    scale = resolution // spec.BASE_RESOLUTION
    labels = snap(image)
    emblem, agreement = _best_emblem(labels)
    if agreement >= EMBLEM_MATCH:
        return Scene(scene_id, emblem=emblem, resolution=resolution)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(spec.PALETTE_NAMES))
    background = spec.PALETTE_NAMES[_BACKGROUND_LABELS[int(counts[_BACKGROUND_LABELS].argmax())]]
    objects = []
    for color_index, color in enumerate(spec.COLORS):
        if counts[color_index] == 0:
            continue
        components, _ = ndimage.label(labels == color_index)
        for label, (ys, xs) in enumerate(ndimage.find_objects(components), 1):
            component = components == label
            if component.sum() < 4 * scale * scale:
                continue
            objects.append(_object_from_box(component, xs, ys, color, scale))
    objects.sort(key=lambda o: (spec.POSITIONS.index(o.position), o.center))
    return Scene(scene_id, background, tuple(objects), resolution=resolution)


def _object_from_box(component, xs: slice, ys: slice, color: str, scale: int) -> ShapeObject:
    width, height = xs.stop - xs.start, ys.stop - ys.start
    side_px = max(width, height)
    side_px += (-side_px) % (2 * scale)  # sides are even in base pixels
    x0 = (xs.start + xs.stop - side_px) // 2
    y0 = (ys.start + ys.stop - side_px) // 2
    shape = _fit_shape(component, x0, y0, side_px, scale)
    side = side_px // scale
    center = (round((xs.start + xs.stop) / (2 * scale)), round((ys.start + ys.stop) / (2 * scale)))
    return ShapeObject(shape, color, spec.size_of_side(side), spec.position_of_point(*center), center, side)

