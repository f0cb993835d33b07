import pytest
from hypothesis import given, settings, strategies as st

from cm3jax.shapes import captions, spec
from cm3jax.shapes.captions import CaptionStyle, caption, describe, grounding_caption, parse
from cm3jax.shapes.emblems import EMBLEM_NAMES
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.tasks import grounding_scene
from cm3jax.shapes.world import sample_split, scene_rng


def _scenes():
    return sample_split("train", 150) + sample_split("novel", 30) + sample_split("memory", 40)


def test_every_production_parses_back_to_its_scene():
    styles = list(CaptionStyle.all())
    for scene in _scenes():
        for style in styles:
            for detail in captions.DETAILS:
                text = caption(scene, style, detail)
                assert parse(text) == describe(scene, detail), text
            if scene.emblem is None:
                assert parse(caption(scene, style)).to_scene().describe() == scene.describe()


def test_paraphrases_really_differ():
    scene = sample_split("train", 3)[2]
    assert len({caption(scene, style) for style in CaptionStyle.all()}) >= 8


objects = st.builds(
    lambda shape, color, size, cell, jitter: (shape, color, size, cell, jitter),
    st.sampled_from(spec.SHAPES), st.sampled_from(list(spec.COLORS)), st.sampled_from(list(spec.SIZES)),
    st.integers(0, 8), st.tuples(st.sampled_from(spec.JITTERS), st.sampled_from(spec.JITTERS)))


@settings(max_examples=300, deadline=None)
@given(st.lists(objects, min_size=1, max_size=3, unique_by=(lambda o: o[3], lambda o: o[:2])),
       st.sampled_from(list(spec.BACKGROUNDS)), st.sampled_from(list(CaptionStyle.all())))
def test_any_scene_round_trips(objs, background, style):
    scene = Scene("h", background, tuple(ShapeObject.at_cell(s, c, z, spec.POSITIONS[p], j) for s, c, z, p, j in objs))
    assert parse(caption(scene, style)) == describe(scene)
    assert parse(caption(scene, style, "short")) == describe(scene, "short")


def test_grounding_captions_give_boxes_on_the_0_255_grid():
    text = grounding_caption(Scene("g", "black", (ShapeObject.free("circle", "red", (7, 7), 10),)))
    assert text == "a red circle at (16, 16) -> (96, 96)"
    for i in range(300):
        scene = grounding_scene(f"g{i}", scene_rng("train", i, 0, 1))
        parsed = parse(scene.caption)
        assert [o.box for o in parsed.objects] == [o.box() for o in scene.objects]
        assert parsed.to_scene().describe() == scene.describe()


def test_emblem_names_parse():
    for name in EMBLEM_NAMES:
        for form in captions.EMBLEM_FORMS:
            assert parse(form.format(name)).emblem == name


@pytest.mark.parametrize("text,word", [
    ("a large magenta circle in the top left", "magenta"),
    ("a small red hexagon at the bottom", "hexagon"),
    ("top left: a big red circle on a plaid background", "plaid"),
    ("an image of the flag of atlantis", "the flag of atlantis"),
])
def test_unknown_words_are_named(text, word):
    with pytest.raises(ShapesError, match=word):
        parse(text)


def test_malformed_captions_are_refused():
    for text in ["red circle top", "a red circle in the top left and", "a red circle at (0, 0) -> (300, 8)",
                 "a red circle and a blue circle and a red square and a green cross"]:
        with pytest.raises(ShapesError):
            parse(text)


def test_short_captions_do_not_determine_a_scene():
    with pytest.raises(ShapesError, match="full caption"):
        parse("a red circle").to_scene()
