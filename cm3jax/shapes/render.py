"""Exact, anti-alias-free rasterisation of scenes (docs/shapes.md, Objects)."""

from __future__ import annotations

import functools

import numpy as np

from cm3jax.shapes import spec
from cm3jax.shapes.emblems import render_emblem
from cm3jax.shapes.scene import Scene, ShapeObject


@functools.lru_cache(maxsize=None)
def shape_mask(shape: str, side: int, scale: int = 1) -> np.ndarray:
    """bool[side*scale, side*scale]: which pixels of an object's box belong to the shape.

    Every length of the spec scales with the resolution, including the cross's arm
    half-width and the triangle's apex offset (both 1 pixel at the base resolution).
    """
    spec.check_word(shape, spec.SHAPES, "shape")
    s = side * scale
    h = s / 2
    offsets = np.arange(s) + 0.5 - h
    u = offsets[None, :]
    v = offsets[:, None]
    if shape == "square":
        mask = np.ones((s, s), bool)
    elif shape == "circle":
        mask = u * u + v * v <= h * h
    elif shape == "diamond":
        mask = np.abs(u) + np.abs(v) <= h
    elif shape == "triangle":
        mask = np.abs(u) <= (v + h + scale) / 2
    else:  # cross
        mask = (np.abs(u) <= scale) | (np.abs(v) <= scale)
    mask = np.broadcast_to(mask, (s, s)).copy()
    mask.setflags(write=False)
    return mask


def paint_object(canvas: np.ndarray, obj: ShapeObject, value, scale: int) -> None:
    """Paints `obj` in `value` (an RGB triple, or a level on a 2-d canvas) in place, clipped."""
    mask = shape_mask(obj.shape, obj.side, scale)
    x0, y0 = (obj.center[0] - obj.side // 2) * scale, (obj.center[1] - obj.side // 2) * scale
    size = canvas.shape[0]
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + mask.shape[1], size), min(y0 + mask.shape[0], size)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    window = mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    canvas[cy0:cy1, cx0:cx1][window] = value


def render(scene: Scene, resolution: int | None = None) -> np.ndarray:
    """uint8[R, R, 3] image of the scene (R = the scene's resolution unless given)."""
    resolution = spec.check_resolution(resolution or scene.resolution)
    if scene.emblem is not None:
        return render_emblem(scene.emblem, resolution)
    scale = resolution // spec.BASE_RESOLUTION
    canvas = np.empty((resolution, resolution, 3), np.uint8)
    canvas[:] = spec.BACKGROUNDS[scene.background]
    for obj in scene.objects:
        paint_object(canvas, obj, spec.COLORS[obj.color], scale)
    return canvas


def render_many(scenes, resolution: int | None = None) -> np.ndarray:
    """uint8[N, R, R, 3]; all scenes must share one resolution."""
    if not scenes:
        r = resolution or spec.BASE_RESOLUTION
        return np.zeros((0, r, r, 3), np.uint8)
    return np.stack([render(s, resolution) for s in scenes])
