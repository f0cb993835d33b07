"""The caption grammar (with paraphrases) and its parser: parse(caption(scene)) == scene.

Full captions say every object's size, colour, shape and cell; the background is said
unless it is black (the default), and may be said anyway. Short captions name only
colours and shapes; long ones always state the background. Grounding captions give
each object's box on a 0..255 grid instead of a size and a cell.

    a large red circle in the top left
    top left: a big red circle
    there is a small blue square at the bottom right and a large yellow cross in the middle on a gray background
    a red circle at (16, 16) -> (96, 96)
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import re

import numpy as np

from cm3jax.shapes import spec
from cm3jax.shapes.emblems import EMBLEM_NAMES
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import ShapesError

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_WORDS = {p: (p,) for p in spec.POSITIONS} | {"center": ("center", "middle")}
FORMS = ("list", "there_is", "colon")
DETAILS = ("full", "short", "long")
PREPOSITIONS = ("in", "at")
EMBLEM_FORMS = ("{}", "a picture of {}", "an image of {}")


@dataclasses.dataclass(frozen=True)
class CaptionStyle:
    """One production of the grammar; `rng` picks these, tests enumerate them."""
    form: str = "list"
    synonym: int = 0  # which synonym of size and position words
    preposition: str = "in"
    say_background: bool = False  # matters only for black, the default
    emblem_form: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "CaptionStyle":
        return cls(FORMS[rng.integers(3)], int(rng.integers(2)), PREPOSITIONS[rng.integers(2)],
                   bool(rng.integers(2)), int(rng.integers(len(EMBLEM_FORMS))))

    @classmethod
    def all(cls):
        for form, syn, prep, bg, em in itertools.product(FORMS, (0, 1), PREPOSITIONS, (False, True),
                                                         range(len(EMBLEM_FORMS))):
            yield cls(form, syn, prep, bg, em)


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _noun_phrase(obj: ShapeObject, style: CaptionStyle, with_size: bool) -> str:
    words = ([SIZE_WORDS[obj.size][style.synonym]] if with_size else []) + [obj.color, obj.shape]
    return " ".join([_article(words[0])] + words)


def _position_word(position: str, style: CaptionStyle) -> str:
    words = POSITION_WORDS[position]
    return words[style.synonym % len(words)]


def _join(items: list[str], sep: str = ", ") -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return sep.join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, style: CaptionStyle | None = None, detail: str = "full",
            rng: np.random.Generator | None = None) -> str:
    """The caption of `scene` in `style` (sampled from `rng` when not given)."""
    spec.check_word(detail, DETAILS, "caption detail")
    if style is None:
        style = CaptionStyle.sample(rng if rng is not None else np.random.default_rng(0))
    if scene.emblem is not None:
        return EMBLEM_FORMS[style.emblem_form].format(scene.emblem)
    if detail == "short":
        text = _join([_noun_phrase(o, style, with_size=False) for o in scene.objects])
        return ("there is " + text) if style.form == "there_is" else text
    if style.form == "colon":
        text = "; ".join(f"{_position_word(o.position, style)}: {_noun_phrase(o, style, True)}"
                         for o in scene.objects)
    else:
        text = _join([f"{_noun_phrase(o, style, True)} {style.preposition} the "
                      f"{_position_word(o.position, style)}" for o in scene.objects])
        if style.form == "there_is":
            text = "there is " + text
    if scene.background != "black" or style.say_background or detail == "long":
        text += f" on a {scene.background} background"
    return text


def grounding_caption(scene: Scene, style: CaptionStyle | None = None) -> str:
    """`a red circle at (16, 16) -> (96, 96) and ...`: boxes on the 0..255 grid."""
    style = style or CaptionStyle()
    items = []
    for obj in scene.objects:
        (x0, y0), (x1, y1) = box_to_grid(obj.box())
        items.append(f"{_noun_phrase(obj, style, False)} at ({x0}, {y0}) -> ({x1}, {y1})")
    text = " and ".join(items)
    if scene.background != "black" or style.say_background:
        text += f" on a {scene.background} background"
    return text


def box_to_grid(box: tuple[int, int, int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    per_pixel = (spec.GRID_MAX + 1) // spec.BASE_RESOLUTION
    x0, y0, x1, y1 = (min(v * per_pixel, spec.GRID_MAX) for v in box)
    return (x0, y0), (x1, y1)


def grid_to_box(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    per_pixel = (spec.GRID_MAX + 1) / spec.BASE_RESOLUTION
    for v in (x0, y0, x1, y1):
        if not 0 <= v <= spec.GRID_MAX:
            raise ShapesError(f"Box coordinate {v} is outside the 0..{spec.GRID_MAX} grid.")
    return tuple(int(round(v / per_pixel)) for v in (x0, y0, x1, y1))


# ----------------------------------------------------------------------------- parsing

def _alternation(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_SIZE = _alternation(w for ws in SIZE_WORDS.values() for w in ws)
_COLOR = _alternation(spec.COLORS)
_SHAPE = _alternation(spec.SHAPES)
_POS = _alternation(w for ws in POSITION_WORDS.values() for w in ws)
_NP = rf"an? (?:(?P<size>{_SIZE}) )?(?P<color>{_COLOR}) (?P<shape>{_SHAPE})"
_ITEM = re.compile(rf"{_NP}(?: (?:in|at) the (?P<pos>{_POS}))?")
_COLON_ITEM = re.compile(rf"(?P<pos>{_POS}): {_NP}")
_NUM = r"(\d{1,3})"
_GROUND_ITEM = re.compile(rf"an? (?P<color>{_COLOR}) (?P<shape>{_SHAPE}) at "
                          rf"\({_NUM}, {_NUM}\) -> \({_NUM}, {_NUM}\)")
_BACKGROUND = re.compile(r"^(?P<rest>.*) on an? (?P<bg>\w+) background$")
_EMBLEM = re.compile(r"^(?:a picture of |an image of )?(?P<name>the flag of \w+)$")
_VOCAB = ({"a", "an", "and", "there", "is", "in", "at", "the", "on", "background", "->"}
          | set(spec.COLORS) | set(spec.SHAPES) | set(spec.BACKGROUNDS)
          | {w for ws in SIZE_WORDS.values() for w in ws}
          | {w for ws in POSITION_WORDS.values() for w in ws for w in w.split()})


@dataclasses.dataclass(frozen=True)
class ParsedObject:
    """What a caption says of one object; None where it says nothing."""
    shape: str
    color: str
    size: str | None = None
    position: str | None = None
    box: tuple[int, int, int, int] | None = None  # base pixels, grounding only


@dataclasses.dataclass(frozen=True)
class ParsedCaption:
    background: str | None = None  # None: a short caption, which does not say
    objects: tuple[ParsedObject, ...] = ()
    emblem: str | None = None

    def to_scene(self, scene_id: str = "", resolution: int = spec.BASE_RESOLUTION) -> Scene:
        """The scene this caption asks for (cells centred, no jitter)."""
        if self.emblem is not None:
            return Scene(scene_id, emblem=self.emblem, resolution=resolution)
        objects = []
        for o in self.objects:
            if o.box is not None:
                x0, y0, x1, y1 = o.box
                objects.append(ShapeObject.free(o.shape, o.color, ((x0 + x1) // 2, (y0 + y1) // 2), x1 - x0))
            elif o.size is None or o.position is None:
                raise ShapesError("This caption does not say every object's size and position, "
                                  "so it does not determine a scene; use a full caption.")
            else:
                objects.append(ShapeObject.at_cell(o.shape, o.color, o.size, o.position))
        return Scene(scene_id, self.background, tuple(objects), resolution=resolution)


def describe(scene: Scene, detail: str = "full") -> ParsedCaption:
    """What a caption of `detail` says about `scene` (the parser's expected output)."""
    if scene.emblem is not None:
        return ParsedCaption(emblem=scene.emblem)
    if detail == "short":
        return ParsedCaption(None, tuple(ParsedObject(o.shape, o.color) for o in scene.objects))
    return ParsedCaption(scene.background,
                         tuple(ParsedObject(o.shape, o.color, o.size, o.position) for o in scene.objects))


def meaning_of(said: ParsedCaption) -> tuple:
    """What a caption says, the order of its objects aside."""
    return said.background, tuple(sorted(dataclasses.astuple(o) for o in said.objects)), said.emblem


def meaning(scene: Scene) -> tuple:
    """What any full caption of the scene says: two scenes with one meaning differ only in jitter."""
    return meaning_of(describe(scene))


def parse(text: str) -> ParsedCaption:
    """Reads any caption of the grammar back; an unknown word is named in the error."""
    text = " ".join(text.strip().lower().split())
    emblem = _EMBLEM.match(text)
    if emblem:
        name = spec.check_word(emblem["name"], EMBLEM_NAMES, "emblem")
        return ParsedCaption(emblem=name)
    background = None
    bg = _BACKGROUND.match(text)
    if bg:
        background = spec.check_word(bg["bg"], spec.BACKGROUNDS, "background")
        text = bg["rest"]
    if text.startswith("there is "):
        text = text[len("there is "):]
    if _GROUND_ITEM.match(text):
        objects = _parse_items(text, _GROUND_ITEM, r" and ")
    elif _COLON_ITEM.match(text):
        objects = _parse_items(text, _COLON_ITEM, r"; ")
    else:
        objects = _parse_items(text, _ITEM, r", | and ")
    if background is None and all(o.box is not None or o.position is not None for o in objects):
        background = "black"  # a caption that places its objects leaves only black unsaid
    return ParsedCaption(background, tuple(objects))


def _parse_items(text: str, item: re.Pattern, separator: str) -> list[ParsedObject]:
    objects, pos = [], 0
    while True:
        m = item.match(text, pos)
        if not m:
            _fail(text)
        objects.append(_parsed_object(m))
        pos = m.end()
        if pos == len(text):
            break
        sep = re.compile(separator).match(text, pos)
        if not sep:
            _fail(text)
        pos = sep.end()
    if len(objects) > spec.MAX_OBJECTS:
        raise ShapesError(f"Caption names {len(objects)} objects; a scene holds at most {spec.MAX_OBJECTS}.")
    return objects


def _parsed_object(m: re.Match) -> ParsedObject:
    groups = m.groupdict()
    size = position = box = None
    if groups.get("size"):
        size = next(k for k, ws in SIZE_WORDS.items() if groups["size"] in ws)
    if groups.get("pos"):
        position = next(k for k, ws in POSITION_WORDS.items() if groups["pos"] in ws)
    if "size" not in groups:  # a grounding item
        box = grid_to_box(*(int(v) for v in m.groups()[2:6]))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ShapesError(f"Box in {m.group(0)!r} is empty: its end must lie right of and below its start.")
    return ParsedObject(groups["shape"], groups["color"], size, position, box)


def _fail(text: str):
    for word in re.findall(r"[a-z]+", text):
        if word not in _VOCAB and not word.startswith("flag"):
            near = difflib.get_close_matches(word, sorted(_VOCAB), n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""
            raise ShapesError(f"Caption {text!r}: unknown word {word!r}{hint}. Colours: "
                              f"{', '.join(spec.COLORS)}; shapes: {', '.join(spec.SHAPES)}.")
    raise ShapesError(f"Caption {text!r} does not follow the Shapes grammar, e.g. "
                      f"'a large red circle in the top left on a black background'.")
