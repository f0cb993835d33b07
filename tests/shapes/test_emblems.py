"""The 32 emblems: distinct names and patterns, 16 seen and 16 unseen, each pattern of its 2 or 3
palette colours filling the canvas, fixed by EMBLEM_SEED, and rendered at every resolution; and the
throwaway emblems of training, none of them one of the 32."""

import numpy as np
import pytest

from cm3jax.shapes import emblems as emblems_module
from cm3jax.shapes import spec
from cm3jax.shapes.emblems import (EMBLEM_NAMES, KINDS, NUM_EMBLEMS, SEEN_EMBLEMS, UNSEEN_EMBLEMS, emblem_by_name,
                                   emblems, render_emblem)
from cm3jax.shapes.spec import ShapesError


def test_32_distinct_names_split_16_seen_16_unseen():
    assert NUM_EMBLEMS == 32 and len(EMBLEM_NAMES) == 32 and len(set(EMBLEM_NAMES)) == 32
    assert all(name.startswith("the flag of ") for name in EMBLEM_NAMES)
    assert len(SEEN_EMBLEMS) == len(UNSEEN_EMBLEMS) == 16 and not set(SEEN_EMBLEMS) & set(UNSEEN_EMBLEMS)
    assert SEEN_EMBLEMS + UNSEEN_EMBLEMS == EMBLEM_NAMES
    assert [e.seen for e in emblems()] == [True] * 16 + [False] * 16
    assert [e.index for e in emblems()] == list(range(32))


def test_emblems_are_distinct_full_canvas_patterns_of_two_or_three_colours():
    images = [render_emblem(n).tobytes() for n in EMBLEM_NAMES]
    assert len(set(images)) == 32
    for e in emblems():
        assert e.kind in KINDS and len(set(e.colors)) == len(e.colors) in (2, 3)
        assert set(e.colors) <= set(spec.PALETTE_NAMES)
        image = render_emblem(e.name)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert {tuple(p) for p in image.reshape(-1, 3)} == {tuple(spec.PALETTE_RGB[spec.PALETTE_NAMES.index(c)])
                                                            for c in e.colors}


def test_fixed_by_the_seed():
    first = emblems()
    emblems_module.emblems.cache_clear()
    emblems_module._render_cached.cache_clear()
    assert emblems() == first
    assert EMBLEM_NAMES[0] == "the flag of jormark", "pinned by EMBLEM_SEED and the world version"


def test_render_draws_the_same_pattern_at_every_resolution_and_returns_a_copy():
    for name in EMBLEM_NAMES:
        base = render_emblem(name)
        for resolution in (64, 128):
            big = render_emblem(name, resolution)
            scale = resolution // 32
            assert big.shape == (resolution, resolution, 3)
            assert {tuple(p) for p in big.reshape(-1, 3)} == {tuple(p) for p in base.reshape(-1, 3)}
            upscaled = np.repeat(np.repeat(base, scale, 0), scale, 1)
            assert (big == upscaled).all(-1).mean() > 0.95, "drawn at pixel centres: edges may move"
    name = EMBLEM_NAMES[3]
    big = render_emblem(name, 128)
    big[:] = 0
    assert render_emblem(name, 128).any(), "callers get their own array"
    with pytest.raises(ShapesError, match="resolution 48"):
        render_emblem(name, 48)


def test_emblem_by_name_suggests_near_names():
    assert emblem_by_name(EMBLEM_NAMES[7]).index == 7
    with pytest.raises(ShapesError, match=f"Unknown emblem 'the flag of jormar'. Did you mean '{EMBLEM_NAMES[0]}'"):
        emblem_by_name("the flag of jormar")


def test_throwaway_names_are_none_of_the_32_and_distinct():
    assert len(set(emblems_module.THROWAWAY_NAMES)) == len(emblems_module.THROWAWAY_NAMES)
    assert not set(emblems_module.THROWAWAY_NAMES) & set(EMBLEM_NAMES)


def test_throwaway_patterns_are_new_distinct_and_fixed_by_the_seed():
    patterns = emblems_module.throwaway_patterns(200, seed=3)
    assert patterns.shape == (200, 32, 32, 3) and patterns.dtype == np.uint8
    flat = {p.tobytes() for p in patterns}
    assert len(flat) == 200, "distinct"
    assert not flat & {render_emblem(n).tobytes() for n in EMBLEM_NAMES}, "none of the 32"
    np.testing.assert_array_equal(patterns, emblems_module.throwaway_patterns(200, seed=3))
    assert not np.array_equal(patterns, emblems_module.throwaway_patterns(200, seed=4))
    palette = {tuple(c) for c in spec.PALETTE_RGB}
    assert {tuple(c) for c in patterns.reshape(-1, 3)} <= palette, "palette colours only, like the 32"
    big = emblems_module.throwaway_patterns(200, seed=3, resolution=64)
    assert big.shape == (200, 64, 64, 3)
    np.testing.assert_array_equal(big[:, :2, :2].reshape(200, 4, 3)[:, 0], patterns[:, 0, 0]), "the same patterns"
