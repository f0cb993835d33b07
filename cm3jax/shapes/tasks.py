"""Task generators: every Shapes task as (input, target) built from a scene and a random stream.

Tasks: text -> image, short and long captions, VQA, text-guided editing, spatially
grounded generation, structure (edges, segmentation) -> image, and image infilling.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cm3jax.shapes import spec
from cm3jax.shapes.captions import CaptionStyle, _noun_phrase, _position_word, caption, grounding_caption
from cm3jax.shapes.render import paint_object, render
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.world import ALL_PAIRS, novel_pairs, sample_jitter

# Grey level of each shape class in segmentation maps; the background is 0.
SEGMENTATION_LEVELS = {shape: 50 + 40 * i for i, shape in enumerate(spec.SHAPES)}
EDGE_LEVEL = 255
INFILL_GRID = 4  # infill regions are aligned to this many base pixels (one image token at factor 4)


# ----------------------------------------------------------------------------- VQA

def _reference(obj: ShapeObject, scene: Scene) -> str:
    """The shortest unambiguous name of an object: its shape, else colour and shape."""
    if sum(o.shape == obj.shape for o in scene.objects) == 1:
        return obj.shape
    return f"{obj.color} {obj.shape}"


def vqa(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """One question about the scene and its one-word (or one-name) answer."""
    if scene.emblem is not None:
        return "which flag is this?", scene.emblem
    kinds = ["count", "exists", "where", "size"]
    if any(sum(o.shape == obj.shape for o in scene.objects) == 1 for obj in scene.objects):
        kinds.append("color")
    kind = kinds[rng.integers(len(kinds))]
    if kind == "count":
        return "how many objects are there?", spec.NUMBER_WORDS[len(scene.objects)]
    if kind == "exists":
        shape = spec.SHAPES[rng.integers(len(spec.SHAPES))]
        return f"is there a {shape}?", "yes" if any(o.shape == shape for o in scene.objects) else "no"
    if kind == "color":
        unique = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
        obj = unique[rng.integers(len(unique))]
        return f"what color is the {obj.shape}?", obj.color
    obj = scene.objects[rng.integers(len(scene.objects))]
    if kind == "where":
        return f"where is the {obj.color} {obj.shape}?", obj.position
    return f"what size is the {obj.color} {obj.shape}?", obj.size


# ----------------------------------------------------------------------------- editing

EDIT_KINDS = ("recolor", "move", "remove", "add")
_TEMPLATES = {
    "recolor": ("make the {ref} {color}", "change the color of the {ref} to {color}"),
    "move": ("move the {ref} to the {pos}", "put the {ref} in the {pos}"),
    "remove": ("remove the {ref}", "delete the {ref}"),
    "add": ("add {np} in the {pos}", "put {np} in the {pos}"),
}


@dataclasses.dataclass(frozen=True)
class Edit:
    kind: str
    instruction: str
    before: Scene
    after: Scene


def _free_cells(scene: Scene) -> list[str]:
    taken = {o.position for o in scene.objects}
    return [p for p in spec.POSITIONS if p not in taken]


def edit(scene: Scene, rng: np.random.Generator, allow_novel: bool = False) -> Edit | None:
    """A random applicable edit, or None for emblem scenes. Unedited objects keep their
    exact place; a moved object keeps its jitter. Without `allow_novel` no edit creates
    a held-out colour-shape pair (so train stays free of them)."""
    if scene.emblem is not None:
        return None
    allowed = [p for p in ALL_PAIRS if allow_novel or p not in novel_pairs()]
    used = {(o.color, o.shape) for o in scene.objects}
    kinds = ["recolor", "move"]
    if len(scene.objects) > 1:
        kinds.append("remove")
    if len(scene.objects) < spec.MAX_OBJECTS:
        kinds.append("add")
    kind = kinds[rng.integers(len(kinds))]
    template = _TEMPLATES[kind][rng.integers(2)]
    style = CaptionStyle(synonym=int(rng.integers(2)))
    objects = list(scene.objects)
    if kind == "add":
        pairs = [p for p in allowed if p not in used]
        color, shape = pairs[rng.integers(len(pairs))]
        free = _free_cells(scene)
        position = free[rng.integers(len(free))]
        size = ("small", "large")[rng.integers(2)]
        new = ShapeObject.at_cell(shape, color, size, position, sample_jitter(rng))
        objects.append(new)
        text = template.format(np=_noun_phrase(new, style, True), pos=_position_word(position, style))
    else:
        index = int(rng.integers(len(objects)))
        obj = objects[index]
        ref = _reference(obj, scene)
        if kind == "recolor":
            colors = [c for c in spec.COLORS
                      if c != obj.color and (c, obj.shape) in allowed and (c, obj.shape) not in used]
            if not colors:
                return edit(scene, rng, allow_novel)
            color = colors[rng.integers(len(colors))]
            objects[index] = dataclasses.replace(obj, color=color)
            text = template.format(ref=ref, color=color)
        elif kind == "move":
            free = _free_cells(scene)
            position = free[rng.integers(len(free))]
            col, row = spec.cell_of_position(obj.position)
            jitter = (obj.center[0] - spec.CELL_CENTERS[col], obj.center[1] - spec.CELL_CENTERS[row])
            objects[index] = ShapeObject.at_cell(obj.shape, obj.color, obj.size, position, jitter)
            text = template.format(ref=ref, pos=_position_word(position, style))
        else:
            del objects[index]
            text = template.format(ref=ref)
    after = scene.replace(id=scene.id + "-edited", objects=tuple(objects))
    after = after.replace(caption=caption(after, CaptionStyle.sample(rng)))
    return Edit(kind, text, scene, after)


# ----------------------------------------------------------------------------- grounding

def grounding_scene(scene_id: str, rng: np.random.Generator, resolution: int = spec.BASE_RESOLUTION,
                    allow_novel: bool = False) -> Scene:
    """A scene whose 1-3 objects sit anywhere with any even side 4..16 (they may overlap),
    captioned with their boxes on the 0..255 grid."""
    pairs = [p for p in ALL_PAIRS if allow_novel or p not in novel_pairs()]
    n = int(rng.integers(1, spec.MAX_OBJECTS + 1))
    chosen = rng.permutation(len(pairs))[:n]
    objects = []
    for i in chosen:
        color, shape = pairs[i]
        side = int(spec.GROUNDING_SIDES[rng.integers(len(spec.GROUNDING_SIDES))])
        h = side // 2
        center = (int(rng.integers(h, spec.BASE_RESOLUTION - h + 1)), int(rng.integers(h, spec.BASE_RESOLUTION - h + 1)))
        objects.append(ShapeObject.free(shape, color, center, side))
    background = tuple(spec.BACKGROUNDS)[rng.integers(len(spec.BACKGROUNDS))]
    scene = Scene(scene_id, background, tuple(objects), resolution=resolution)
    return scene.replace(caption=grounding_caption(scene, CaptionStyle(say_background=bool(rng.integers(2)))))


# ----------------------------------------------------------------------------- structure maps

def segmentation_map(scene: Scene, resolution: int | None = None) -> np.ndarray:
    """uint8[R, R]: each object's pixels in its shape's grey level, background 0."""
    resolution = resolution or scene.resolution
    if scene.emblem is not None:
        return np.zeros((resolution, resolution), np.uint8)
    out = np.zeros((resolution, resolution), np.uint8)
    scale = resolution // spec.BASE_RESOLUTION
    for obj in scene.objects:
        paint_object(out, obj, SEGMENTATION_LEVELS[obj.shape], scale)
    return out


def edge_map(image_RR3: np.ndarray) -> np.ndarray:
    """uint8[R, R]: 255 on pixels whose colour differs from a 4-neighbour's (the outline), else 0.
    The canvas border does not count as an edge."""
    img = image_RR3.astype(np.int16)
    differs = np.zeros(img.shape[:2], bool)
    dy = (img[1:] != img[:-1]).any(-1)
    dx = (img[:, 1:] != img[:, :-1]).any(-1)
    differs[1:] |= dy
    differs[:-1] |= dy
    differs[:, 1:] |= dx
    differs[:, :-1] |= dx
    return np.where(differs, EDGE_LEVEL, 0).astype(np.uint8)


# ----------------------------------------------------------------------------- infilling

def infill_region(scene: Scene, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in base pixels, aligned to INFILL_GRID: the grid-aligned box of one
    object (the thing to redraw), or a random box for emblems."""
    g, base = INFILL_GRID, spec.BASE_RESOLUTION
    if scene.objects:
        x0, y0, x1, y1 = scene.objects[rng.integers(len(scene.objects))].box()
        x0, y0 = max(0, x0 // g * g), max(0, y0 // g * g)
        x1, y1 = min(base, -(-x1 // g) * g), min(base, -(-y1 // g) * g)
        return x0, y0, x1, y1
    w, h = (int(rng.integers(2, 5)) * g for _ in range(2))
    x0, y0 = int(rng.integers(0, (base - w) // g + 1)) * g, int(rng.integers(0, (base - h) // g + 1)) * g
    return x0, y0, x0 + w, y0 + h


def mask_region(image_RR3: np.ndarray, region: tuple[int, int, int, int], fill: int = 128) -> np.ndarray:
    """A copy of the image with the region (base pixels) filled grey."""
    scale = image_RR3.shape[0] // spec.BASE_RESOLUTION
    x0, y0, x1, y1 = (v * scale for v in region)
    out = image_RR3.copy()
    out[y0:y1, x0:x1] = fill
    return out


# ----------------------------------------------------------------------------- all tasks of one scene

@dataclasses.dataclass(frozen=True)
class SceneTasks:
    """Every task variant derived from one scene (what `cm3jax shapes make` stores)."""
    scene: Scene
    image: np.ndarray
    caption_short: str
    caption_long: str
    question: str
    answer: str
    edit_instruction: str  # empty for emblem scenes
    edit_kind: str  # one of EDIT_KINDS; empty for emblem scenes
    edit_scene: Scene  # the scene itself for emblem scenes
    edit_image: np.ndarray
    grounding_scene: Scene
    grounding_image: np.ndarray
    edges: np.ndarray
    segmentation: np.ndarray
    infill_box: tuple[int, int, int, int]


def scene_tasks(scene: Scene, rng: np.random.Generator, allow_novel: bool = False) -> SceneTasks:
    image = render(scene)
    style = CaptionStyle.sample(rng)
    question, answer = vqa(scene, rng)
    the_edit = edit(scene, rng, allow_novel)
    edited = the_edit.after if the_edit else scene
    grounded = grounding_scene(scene.id + "-grounding", rng, scene.resolution, allow_novel)
    return SceneTasks(
        scene=scene, image=image,
        caption_short=caption(scene, style, "short"), caption_long=caption(scene, style, "long"),
        question=question, answer=answer,
        edit_instruction=the_edit.instruction if the_edit else "", edit_kind=the_edit.kind if the_edit else "",
        edit_scene=edited,
        edit_image=render(edited) if the_edit else image,
        grounding_scene=grounded, grounding_image=render(grounded),
        edges=edge_map(image), segmentation=segmentation_map(scene),
        infill_box=infill_region(scene, rng),
    )
