"""Scores images against the scenes they were asked to show (docs/shapes.md, Scoring)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from cm3jax.shapes.detect import EMBLEM_MATCH, check_image, detect, emblem_pixel_accuracy, snap
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import ShapesError

ATTRIBUTES = ("color", "shape", "size", "position")


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _agreement(want: ShapeObject, got: ShapeObject) -> tuple[int, float]:
    same = sum(getattr(want, a) == getattr(got, a) for a in ATTRIBUTES)
    return same, box_iou(want.box(), got.box())


def match_objects(wanted, found) -> list[ShapeObject | None]:
    """For each wanted object, the found object assigned to it (or None), maximising the
    number of agreeing attributes, then box overlap; at most 3 objects, so brute force."""
    wanted, found = list(wanted), list(found)
    slots = found + [None] * len(wanted)
    best, best_key = [None] * len(wanted), None
    for perm in itertools.permutations(range(len(slots)), len(wanted)):
        key = [0, 0.0]
        for w, j in zip(wanted, perm):
            if slots[j] is not None:
                same, iou = _agreement(w, slots[j])
                key[0] += same
                key[1] += iou
        if best_key is None or tuple(key) > best_key:
            best, best_key = [slots[j] for j in perm], tuple(key)
    return best


@dataclasses.dataclass
class SceneScore:
    exact: bool
    background: bool | None = None
    count: bool | None = None
    attributes: dict[str, list[bool]] = dataclasses.field(default_factory=dict)
    box_ious: list[float] = dataclasses.field(default_factory=list)
    emblem_pixels: float | None = None


def score_scene(wanted: Scene, image) -> SceneScore:
    image = check_image(image)
    if wanted.emblem is not None:
        labels = snap(image)
        pixels = emblem_pixel_accuracy(labels, wanted.emblem)
        return SceneScore(exact=pixels >= EMBLEM_MATCH and detect(image).emblem == wanted.emblem,
                          emblem_pixels=pixels)
    found = detect(image)
    matched = match_objects(wanted.objects, found.objects)
    attributes = {a: [m is not None and getattr(w, a) == getattr(m, a) for w, m in zip(wanted.objects, matched)]
                  for a in ATTRIBUTES}
    background = found.emblem is None and found.background == wanted.background
    count = found.emblem is None and len(found.objects) == len(wanted.objects)
    exact = background and count and all(all(v) for v in attributes.values())
    ious = [box_iou(w.box(), m.box()) if m is not None else 0.0 for w, m in zip(wanted.objects, matched)]
    return SceneScore(exact, background, count, attributes, ious)


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def score(scenes, images) -> dict:
    """Accuracies over a set: per attribute (over objects), count, background, exact match
    (over scenes), box IoU, and emblem pixel accuracy (over emblem scenes)."""
    scenes = list(scenes)
    images = np.asarray(images)
    if len(scenes) != len(images):
        raise ShapesError(f"{len(scenes)} scenes but {len(images)} images; they must pair up one to one, "
                          f"in the same order.")
    results = [score_scene(s, check_image(im, f"image {i}")) for i, (s, im) in enumerate(zip(scenes, images))]
    objects = [r for r in results if r.emblem_pixels is None]
    emblems = [r for r in results if r.emblem_pixels is not None]
    report = {
        "num_scenes": len(results),
        "num_object_scenes": len(objects),
        "num_objects": sum(len(r.box_ious) for r in objects),
        "exact_match": _mean(r.exact for r in results),
        "count": _mean(r.count for r in objects),
        "background": _mean(r.background for r in objects),
    }
    for a in ATTRIBUTES:
        report[a] = _mean(v for r in objects for v in r.attributes[a])
    report["box_iou"] = _mean(v for r in objects for v in r.box_ious)
    report["num_emblem_scenes"] = len(emblems)
    report["emblem_pixel_accuracy"] = _mean(r.emblem_pixels for r in emblems)
    report["emblem_exact_match"] = _mean(r.exact for r in emblems)
    return report


def format_report(report: dict) -> str:
    rows = [(k, "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))) for k, v in report.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
