"""The 32 named emblems: full-canvas patterns known only through their documents.

Emblems 0-15 are `seen` (they appear in training scenes); 16-31 are `unseen` and live
only in the retrieval memory bank. Names and patterns are fixed by EMBLEM_SEED and the
world version.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from cm3jax.shapes import spec

EMBLEM_SEED = 20230905
NUM_EMBLEMS = 32
NUM_SEEN = 16
KINDS = ("horizontal stripes", "vertical stripes", "checkers", "cross", "disc", "diagonal")

PATTERN_PARAMS = {"horizontal stripes": (2, 3, 4), "vertical stripes": (2, 3, 4), "checkers": (4, 8),
                  "cross": (2, 3, 4), "disc": (7, 9, 11), "diagonal": (3, 4, 6)}
_FIRST = ("vex", "zor", "quil", "mar", "tal", "bren", "dor", "kel", "fen", "lum", "nor",
          "pra", "sil", "tov", "wix", "gal", "hest", "jor", "ryn", "ost")
_LAST = ("land", "ia", "stan", "mark", "ora", "heim")


@dataclasses.dataclass(frozen=True)
class Emblem:
    index: int
    name: str
    kind: str
    colors: tuple[str, ...]  # palette names, 2 or 3
    param: int  # bands, checker cell (base px), bar half-width or radius

    @property
    def seen(self) -> bool:
        return self.index < NUM_SEEN


def _pattern_ids(kind: str, param: int, n_colors: int, xb, yb) -> np.ndarray:
    """Index into the emblem's colours at base-unit pixel centres (xb, yb), broadcast."""
    xb, yb = np.broadcast_arrays(xb, yb)
    c = spec.BASE_RESOLUTION / 2
    if kind == "horizontal stripes":
        return np.floor(yb * param / spec.BASE_RESOLUTION).astype(int) % n_colors
    if kind == "vertical stripes":
        return np.floor(xb * param / spec.BASE_RESOLUTION).astype(int) % n_colors
    if kind == "checkers":
        ids = (np.floor(xb / param) + np.floor(yb / param)).astype(int) % 2
        if n_colors == 3:  # the third colour marks the diagonal cells
            ids = np.where(np.floor(xb / param) == np.floor(yb / param), 2, ids)
        return ids
    if kind == "cross":
        bar = (np.abs(xb - c) <= param) | (np.abs(yb - c) <= param)
        ids = bar.astype(int)
        if n_colors == 3:
            ids = np.where((np.abs(xb - c) <= param / 2) & (np.abs(yb - c) <= param / 2), 2, ids)
        return ids
    if kind == "disc":
        r2 = (xb - c) ** 2 + (yb - c) ** 2
        ids = (r2 <= param * param).astype(int)
        if n_colors == 3:
            ids = np.where(r2 <= (param / 2) ** 2, 2, ids)
        return ids
    # diagonal bands
    return np.floor((xb + yb) / (2 * spec.BASE_RESOLUTION) * param).astype(int) % n_colors


def _draw(kind: str, param: int, n_colors: int) -> np.ndarray:
    base = spec.BASE_RESOLUTION
    centres = np.arange(base) + 0.5
    return _pattern_ids(kind, param, n_colors, centres[None, :], centres[:, None])


@functools.lru_cache(maxsize=None)
def emblems() -> tuple[Emblem, ...]:
    rng = np.random.Generator(np.random.PCG64(EMBLEM_SEED))
    names: list[str] = []
    out: list[Emblem] = []
    seen_patterns: set[bytes] = set()
    while len(out) < NUM_EMBLEMS:
        land = _FIRST[rng.integers(len(_FIRST))] + _LAST[rng.integers(len(_LAST))]
        name = f"the flag of {land}"
        kind = KINDS[rng.integers(len(KINDS))]
        param = int(PATTERN_PARAMS[kind][rng.integers(len(PATTERN_PARAMS[kind]))])
        n_colors = int(rng.integers(2, 4))
        colors = tuple(spec.PALETTE_NAMES[i] for i in
                       rng.choice(len(spec.PALETTE_NAMES), size=n_colors, replace=False))
        ids = _draw(kind, param, n_colors)
        if name in names or len(np.unique(ids)) != n_colors:
            continue
        key = np.array([spec.PALETTE_NAMES.index(c) for c in colors])[ids].tobytes()
        if key in seen_patterns:
            continue
        seen_patterns.add(key)
        names.append(name)
        out.append(Emblem(len(out), name, kind, colors, param))
    return tuple(out)


EMBLEM_NAMES: tuple[str, ...] = tuple(e.name for e in emblems())
SEEN_EMBLEMS: tuple[str, ...] = EMBLEM_NAMES[:NUM_SEEN]
UNSEEN_EMBLEMS: tuple[str, ...] = EMBLEM_NAMES[NUM_SEEN:]


def emblem_by_name(name: str) -> Emblem:
    return emblems()[EMBLEM_NAMES.index(spec.check_word(name, EMBLEM_NAMES, "emblem"))]


@functools.lru_cache(maxsize=None)
def _render_cached(name: str, resolution: int) -> np.ndarray:
    emblem = emblem_by_name(name)
    scale = resolution / spec.BASE_RESOLUTION
    centres = (np.arange(resolution) + 0.5) / scale
    ids = _pattern_ids(emblem.kind, emblem.param, len(emblem.colors), centres[None, :], centres[:, None])
    rgb = spec.PALETTE_RGB[[spec.PALETTE_NAMES.index(c) for c in emblem.colors]].astype(np.uint8)
    image = rgb[ids]
    image.setflags(write=False)
    return image


def render_emblem(name: str, resolution: int = spec.BASE_RESOLUTION) -> np.ndarray:
    """uint8[R, R, 3]: the emblem's pattern."""
    return _render_cached(name, spec.check_resolution(resolution)).copy()


# Names for emblems invented in training: two first syllables and an ending (`the flag of
# vexzorland`), so none is one of the 32.
THROWAWAY_NAMES: tuple[str, ...] = tuple(f"the flag of {a}{b}{c}" for a in _FIRST for b in _FIRST for c in _LAST)


def throwaway_patterns(count: int, seed: int, resolution: int = spec.BASE_RESOLUTION) -> np.ndarray:
    """uint8[count, R, R, 3]: distinct patterns of the emblems' grammar that are none of the 32.

    A training example pairs one with a name drawn apart from it (THROWAWAY_NAMES) and puts
    the pair's document before it, so the pattern can be drawn only by copying that document:
    what teaches a decoder to read what it retrieves, with nothing to memorise instead."""
    rng = np.random.default_rng([EMBLEM_SEED, seed])
    known = {render_emblem(name).tobytes() for name in EMBLEM_NAMES}
    scale = resolution / spec.BASE_RESOLUTION
    centres = (np.arange(resolution) + 0.5) / scale
    found: dict[bytes, np.ndarray] = {}
    for _ in range(100 * count):
        if len(found) == count:
            break
        kind = KINDS[rng.integers(len(KINDS))]
        param = int(PATTERN_PARAMS[kind][rng.integers(len(PATTERN_PARAMS[kind]))])
        n_colors = int(rng.integers(2, 4))
        rgb = spec.PALETTE_RGB[rng.choice(len(spec.PALETTE_NAMES), size=n_colors, replace=False)].astype(np.uint8)
        base_ids = _draw(kind, param, n_colors)
        key = rgb[base_ids].tobytes()
        if len(np.unique(base_ids)) != n_colors or key in known or key in found:
            continue
        found[key] = rgb[_pattern_ids(kind, param, n_colors, centres[None, :], centres[:, None])]
    if len(found) < count:
        raise ValueError(f"the emblem grammar gave only {len(found)} distinct new patterns, not {count}")
    return np.stack(list(found.values())) if found else np.zeros((0, resolution, resolution, 3), np.uint8)
