import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.retrieval.clip_data import (Pairs, TrainBatches, caption_of, emblem_text, land_of, load_pairs, mirror,
                                        signature, with_made_up_words)
from cm3jax.shapes.captions import describe, parse
from cm3jax.shapes.emblems import EMBLEM_NAMES
from cm3jax.shapes.render import render
from cm3jax.shapes.scene import Scene, ShapeObject

TEMPLATES = ("the flag of {land}", "{land}'s flag")


@pytest.fixture(scope="module")
def pairs(shapes_dir):
    return load_pairs(shapes_dir, ("train", "memory"), progress=False)


def test_pairs_hold_both_splits_and_one_document_per_emblem(pairs):
    assert len(pairs) == 64 + 48 and pairs.images.shape == (112, 32, 32, 3) and pairs.images.dtype == np.uint8
    assert pairs.splits.count("memory") == 48
    emblems = pairs.emblem_documents()
    assert sorted(pairs.scenes[r].emblem for r in emblems) == sorted(EMBLEM_NAMES)
    assert all(pairs.splits[r] == "memory" for r in emblems)
    np.testing.assert_array_equal(pairs.images[5], render(pairs.scenes[5]))


def test_keys_are_equal_exactly_when_captions_say_the_same():
    a = Scene("a", "black", (ShapeObject.at_cell("circle", "red", "large", "top left", (1, 0)),))
    jittered = Scene("b", "black", (ShapeObject.at_cell("circle", "red", "large", "top left", (-1, 1)),))
    smaller = Scene("c", "black", (ShapeObject.at_cell("circle", "red", "small", "top left"),))
    emblem, same_emblem = Scene("d", emblem=EMBLEM_NAMES[3]), Scene("e", emblem=EMBLEM_NAMES[3])
    scenes = [a, jittered, smaller, emblem, same_emblem]
    keys = Pairs(np.stack([render(s) for s in scenes]), scenes, [""] * 5, ["train"] * 5).keys()
    assert keys[0] == keys[1] and keys[3] == keys[4]
    assert len({keys[0], keys[2], keys[3]}) == 3


def test_batches_are_reproducible_distinct_and_captioned_by_the_grammar(pairs):
    batches = TrainBatches(pairs, 16, seed=0, emblem_share=0.25, emblem_templates=TEMPLATES)
    images, texts, keys = batches.batch(7)
    again = batches.batch(7)
    np.testing.assert_array_equal(images, again[0])
    assert texts == again[1]
    rows = batches.rows(7)
    assert len(set(rows.tolist())) == 16  # without replacement within a step
    assert not np.array_equal(rows, batches.rows(8))
    np.testing.assert_array_equal(images, pairs.images[rows])
    np.testing.assert_array_equal(keys, batches.keys[rows])
    for row, text in zip(rows, texts):
        scene = pairs.scenes[row]
        if scene.emblem is not None:
            assert text in [emblem_text(scene.emblem, t) for t in TEMPLATES]
        else:
            assert parse(text) == describe(scene)  # a fresh production that still says exactly this scene


def test_a_mirrored_scene_renders_to_the_flipped_image(pairs):
    scenes = [s for s in pairs.scenes if s.emblem is None]
    for scene in scenes[:40]:
        np.testing.assert_array_equal(render(mirror(scene)), render(scene)[:, ::-1])
    one = Scene("m", "gray", (ShapeObject.at_cell("triangle", "red", "small", "top left", (1, -1)),))
    assert describe(mirror(one)).objects[0].position == "top right"
    with pytest.raises(UserError, match="emblem"):
        mirror(Scene("e", emblem=EMBLEM_NAMES[0]))


def test_mirrored_batches_keep_image_caption_and_key_together(pairs):
    batches = TrainBatches(pairs, 32, seed=3, emblem_share=0.1, emblem_templates=TEMPLATES, mirror_rate=1.0)
    images, texts, keys = batches.batch(0)
    flipped = 0
    for row, image, text in zip(batches.rows(0), images, texts):
        scene = pairs.scenes[row]
        if scene.emblem is not None:
            np.testing.assert_array_equal(image, pairs.images[row])  # emblems are never mirrored
            continue
        np.testing.assert_array_equal(image, pairs.images[row][:, ::-1])
        assert parse(text) == describe(mirror(scene))
        flipped += 1
    assert flipped > 10
    descriptions = [describe(pairs.scenes[r]) if pairs.scenes[r].emblem else parse(t)
                    for r, t in zip(batches.rows(0), texts)]
    for i in range(32):
        for j in range(32):
            assert (keys[i] == keys[j]) == (descriptions[i] == descriptions[j])


def test_emblem_documents_make_up_their_share(pairs):
    emblem_rows = pairs.emblem_documents()
    batches = TrainBatches(pairs, 16, seed=1, emblem_share=0.5, emblem_templates=TEMPLATES)
    share = np.mean([np.isin(batches.rows(step), emblem_rows).mean() for step in range(40)])
    assert 0.4 < share < 0.6
    uniform = TrainBatches(pairs, 16, seed=1, emblem_share=0.0, emblem_templates=TEMPLATES)
    np.testing.assert_allclose(uniform.p, 1 / len(pairs))


def test_hard_pairs_share_their_coloured_shapes(pairs):
    plain = TrainBatches(pairs, 32, seed=2, emblem_share=0.1, emblem_templates=TEMPLATES)
    hard = TrainBatches(pairs, 32, seed=2, emblem_share=0.1, emblem_templates=TEMPLATES, hard_share=0.5)
    assert hard.num_hard_pairs == 8
    sig = [signature(s) for s in pairs.scenes]

    def sharing(rows):  # rows whose signature another row of the batch also has
        return sum(1 for r in rows if sig[r] is not None and sum(sig[q] == sig[r] for q in rows) > 1)
    for step in range(5):
        rows = hard.rows(step).tolist()
        assert len(rows) == 32 and len(set(rows)) == 32
        head, tail = rows[:24], rows[24:]
        anchors = [r for r in head if r in hard.group_of][:8]
        for anchor in anchors:  # each anchor got a partner in the tail, unless its whole group is in already
            group = set(hard.group_of[anchor]) - {anchor}
            assert group & set(tail) or group <= set(head)
    assert np.mean([sharing(plain.rows(s)) for s in range(5)]) < np.mean([sharing(hard.rows(s)) for s in range(5)])


def test_bad_batch_settings_are_user_errors(pairs):
    with pytest.raises(UserError, match="exceeds"):
        TrainBatches(pairs, 1000, 0, 0.1, TEMPLATES)
    with pytest.raises(UserError, match="emblem_share"):
        TrainBatches(pairs, 8, 0, 1.0, TEMPLATES)
    with pytest.raises(UserError, match="mirror_rate"):
        TrainBatches(pairs, 8, 0, 0.1, TEMPLATES, mirror_rate=-0.1)
    with pytest.raises(UserError, match="recaption"):
        TrainBatches(pairs, 8, 0, 0.1, TEMPLATES, recaption=False, mirror_rate=0.5)
    with pytest.raises(UserError, match="hard_share"):
        TrainBatches(pairs, 8, 0, 0.1, TEMPLATES, hard_share=1.5)
    with pytest.raises(UserError, match="{land}"):
        TrainBatches(pairs, 8, 0, 0.1, ("the flag",))


def test_emblem_templates_fill_in_the_land():
    assert land_of("the flag of jormark") == "jormark"
    assert emblem_text("the flag of jormark", "{land}'s flag") == "jormark's flag"


def test_made_up_words_are_inserted_and_the_rest_kept_in_order():
    rng = np.random.default_rng(0)
    for _ in range(20):
        text = with_made_up_words("a picture of the flag of jormark", rng)
        words = text.split(" ")
        assert len(words) in (8, 9)
        kept = iter(words)
        assert all(any(w == k for k in kept) for w in "a picture of the flag of jormark".split())  # a subsequence
        extra = [w for w in words if w not in "a picture of the flag of jormark".split()]
        assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 10 for w in extra)
    emblem = Scene("e", emblem=EMBLEM_NAMES[0])
    assert caption_of(emblem, rng, TEMPLATES[:1], emblem_noise_rate=0.0) == EMBLEM_NAMES[0]
    assert caption_of(emblem, rng, TEMPLATES[:1], emblem_noise_rate=1.0) != EMBLEM_NAMES[0]
