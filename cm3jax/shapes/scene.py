"""Scene descriptions and their JSON form (the format other tools read and write)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from cm3jax.fileio import atomic_write_text
from cm3jax.shapes import spec
from cm3jax.shapes.emblems import EMBLEM_NAMES
from cm3jax.shapes.spec import ShapesError, check_word


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    size: str
    position: str
    center: tuple[int, int]  # pixels at the base resolution (32)
    side: int  # box side in base pixels: 6 or 8, or any even 4..16 for grounding

    def __post_init__(self):
        check_word(self.shape, spec.SHAPES, "shape")
        check_word(self.color, spec.COLORS, "color")
        check_word(self.size, spec.SIZES, "size")
        check_word(self.position, spec.POSITIONS, "position")

    @classmethod
    def at_cell(cls, shape: str, color: str, size: str, position: str,
                jitter: tuple[int, int] = (0, 0)) -> "ShapeObject":
        col, row = spec.cell_of_position(position)
        center = (spec.CELL_CENTERS[col] + jitter[0], spec.CELL_CENTERS[row] + jitter[1])
        return cls(shape, color, size, position, center, spec.SIZES[size])

    @classmethod
    def free(cls, shape: str, color: str, center: tuple[int, int], side: int) -> "ShapeObject":
        """An object anywhere with any even side (spatially grounded generation)."""
        if side % 2 or not 4 <= side <= 16:
            raise ShapesError(f"Object side {side} is not an even number of pixels from 4 to 16.")
        return cls(shape, color, spec.size_of_side(side), spec.position_of_point(*center),
                   tuple(center), side)

    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in base pixels, end exclusive."""
        h = self.side // 2
        return self.center[0] - h, self.center[1] - h, self.center[0] + h, self.center[1] + h

    def describe(self) -> tuple[str, str, str, str]:
        return self.shape, self.color, self.size, self.position

    def to_json(self) -> dict[str, Any]:
        out = {"shape": self.shape, "color": self.color, "size": self.size,
               "position": self.position, "center": list(self.center)}
        if self.side != spec.SIZES[self.size]:
            out["side"] = self.side
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ShapeObject":
        missing = [k for k in ("shape", "color") if k not in data]
        if missing:
            raise ShapesError(f"Object {data!r} lacks the key(s) {', '.join(missing)}.")
        shape = check_word(data["shape"], spec.SHAPES, "shape")
        color = check_word(data["color"], spec.COLORS, "color")
        size = check_word(data.get("size", "large"), spec.SIZES, "size")
        if "center" in data:
            center = _pixel_pair(data["center"], "center")
            position = data.get("position") or spec.position_of_point(*center)
        elif "position" in data:
            return cls.at_cell(shape, color, size, data["position"])
        else:
            raise ShapesError(f"Object {data!r} needs a 'center' or a 'position'.")
        side = int(data.get("side", spec.SIZES[size]))
        return cls(shape, color, size, position, center, side)


@dataclasses.dataclass(frozen=True)
class Scene:
    id: str
    background: str = "black"
    objects: tuple[ShapeObject, ...] = ()
    emblem: str | None = None
    caption: str = ""
    resolution: int = spec.BASE_RESOLUTION
    extra: tuple[tuple[str, Any], ...] = ()  # keys other tools added; kept on round trips

    def __post_init__(self):
        check_word(self.background, spec.BACKGROUNDS, "background")
        spec.check_resolution(self.resolution)
        if self.emblem is not None and self.objects:
            raise ShapesError(f"Scene {self.id!r} has an emblem and objects; an emblem fills the canvas alone.")

    def describe(self) -> tuple:
        """What a caption can say about the scene: everything but ids, jitter and the caption."""
        if self.emblem is not None:
            return ("emblem", self.emblem)
        return (self.background, tuple(o.describe() for o in self.objects))

    def replace(self, **changes) -> "Scene":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "resolution": self.resolution, "background": self.background,
            "objects": [o.to_json() for o in self.objects], "emblem": self.emblem,
            "caption": self.caption,
        }
        out.update(dict(self.extra))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Scene":
        if not isinstance(data, dict):
            raise ShapesError(f"A scene must be a JSON object, got {type(data).__name__}.")
        known = {"id", "resolution", "background", "objects", "emblem", "caption"}
        emblem = data.get("emblem")
        if emblem is not None:
            check_word(emblem, EMBLEM_NAMES, "emblem")
        return cls(
            id=str(data.get("id", "")),
            background=data.get("background", "black"),
            objects=tuple(ShapeObject.from_json(o) for o in data.get("objects") or ()),
            emblem=emblem,
            caption=data.get("caption", ""),
            resolution=int(data.get("resolution", spec.BASE_RESOLUTION)),
            extra=tuple((k, v) for k, v in data.items() if k not in known),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(", ", ": "))


def _pixel_pair(value: Any, what: str) -> tuple[int, int]:
    try:
        x, y = value
        return int(x), int(y)
    except (TypeError, ValueError):
        raise ShapesError(f"{what} must be two integers [x, y], got {value!r}.") from None


def read_scenes(path: str) -> list[Scene]:
    """Reads a JSONL file of scenes; a bad line is reported with its line number."""
    scenes = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    scenes.append(Scene.from_json(json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ShapesError(f"{path}:{number}: not valid JSON ({e.msg}).") from None
                except ShapesError as e:
                    raise ShapesError(f"{path}:{number}: {e}") from None
    except UnicodeDecodeError:
        raise ShapesError(f"{path} is not a UTF-8 text file of scenes, one JSON object a line.") from None
    return scenes


def write_scenes(scenes, path: str) -> None:
    atomic_write_text(path, "".join(s.dumps() + "\n" for s in scenes))
