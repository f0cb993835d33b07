import numpy as np

from cm3jax.shapes import spec, tasks
from cm3jax.shapes.detect import detect
from cm3jax.shapes.render import render
from cm3jax.shapes.score import score
from cm3jax.shapes.world import novel_pairs, sample_split, scene_rng


def _object_scenes(n=300, split="train"):
    return [s for s in sample_split(split, n) if s.emblem is None]


def _answer_from_detection(question: str, image) -> str:
    """Answers a VQA question by reading the image, not the scene."""
    found = detect(image)
    words = question.rstrip("?").split()
    if question.startswith("how many"):
        return spec.NUMBER_WORDS[len(found.objects)]
    if question.startswith("is there"):
        return "yes" if any(o.shape == words[-1] for o in found.objects) else "no"
    if question.startswith("what color"):
        return next(o.color for o in found.objects if o.shape == words[-1])
    obj = next(o for o in found.objects if (o.color, o.shape) == (words[-2], words[-1]))
    return obj.position if question.startswith("where") else obj.size


def test_vqa_answers_are_what_the_image_shows():
    kinds = set()
    for i, scene in enumerate(_object_scenes()):
        question, answer = tasks.vqa(scene, scene_rng("train", i, 0, 1))
        kinds.add(question.split()[0] + " " + question.split()[1])
        assert _answer_from_detection(question, render(scene)) == answer, question
    assert kinds == {"how many", "is there", "what color", "where is", "what size"}


def test_edits_do_what_they_say():
    kinds = set()
    for i, scene in enumerate(_object_scenes()):
        edit = tasks.edit(scene, scene_rng("train", i, 0, 1))
        kinds.add(edit.kind)
        before, after = {o.describe() for o in scene.objects}, {o.describe() for o in edit.after.objects}
        if edit.kind == "remove":
            assert after < before and len(after) == len(before) - 1
        elif edit.kind == "add":
            assert before < after and len(after) == len(before) + 1
            (new,) = after - before
            assert f"{new[1]} {new[0]}" in edit.instruction
        else:
            (old,), (new,) = before - after, after - before
            changed = [a for a, b, c in zip(("shape", "color", "size", "position"), old, new) if b != c]
            assert changed == (["color"] if edit.kind == "recolor" else ["position"])
            assert new[1 if edit.kind == "recolor" else 3].replace("center", "") in edit.instruction
        assert score([edit.after], render(edit.after)[None])["exact_match"] == 1.0
        assert not {(o.color, o.shape) for o in edit.after.objects} & novel_pairs()
        assert len({(o.color, o.shape) for o in edit.after.objects}) == len(edit.after.objects)
    assert kinds == set(tasks.EDIT_KINDS)
    assert tasks.edit(sample_split("memory", 1)[0], scene_rng("memory", 0, 0, 1)) is None


def test_grounding_scenes_are_drawn_where_their_boxes_say():
    ious = []
    for i in range(200):
        scene = tasks.grounding_scene(f"g{i}", scene_rng("train", i, 0, 1))
        boxes = [o.box() for o in scene.objects]
        assert all(0 <= v <= 32 for b in boxes for v in b)
        assert all(o.side in spec.GROUNDING_SIDES for o in scene.objects)
        ious.append(score([scene], render(scene)[None])["box_iou"])
    # Overlapping objects hide each other; the others come back exactly.
    assert np.mean(ious) > 0.9 and np.median(ious) == 1.0


def test_structure_maps():
    for scene in _object_scenes(100):
        image = render(scene)
        seg = tasks.segmentation_map(scene)
        edges = tasks.edge_map(image)
        background = (image == spec.BACKGROUNDS[scene.background]).all(-1)
        assert np.array_equal(seg == 0, background)
        assert set(np.unique(seg)) - {0} == {tasks.SEGMENTATION_LEVELS[o.shape] for o in scene.objects}
        assert set(np.unique(edges)) <= {0, tasks.EDGE_LEVEL}
        assert tasks.segmentation_map(scene, 64).shape == (64, 64)


def test_edges_outline_both_sides_of_a_boundary():
    from cm3jax.shapes.scene import Scene, ShapeObject
    square = ShapeObject.at_cell("square", "red", "small", "center")  # box [13, 19) x [13, 19)
    edges = tasks.edge_map(render(Scene("e", "black", (square,)))) > 0
    expected = np.zeros((32, 32), bool)
    expected[13:19, 13:19] = True
    expected[14:18, 14:18] = False  # the square's own outline ring ...
    expected[12, 13:19] = expected[19, 13:19] = expected[13:19, 12] = expected[13:19, 19] = True  # ... and its neighbours
    assert np.array_equal(edges, expected)


def test_infill_regions_cover_an_object_on_the_token_grid():
    for i, scene in enumerate(sample_split("train", 200)):
        x0, y0, x1, y1 = tasks.infill_region(scene, scene_rng("train", i, 0, 1))
        assert all(v % tasks.INFILL_GRID == 0 for v in (x0, y0, x1, y1))
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
        if scene.objects:
            assert any(x0 <= o.box()[0] and o.box()[2] <= x1 and y0 <= o.box()[1] and o.box()[3] <= y1
                       for o in scene.objects)
        masked = tasks.mask_region(render(scene), (x0, y0, x1, y1))
        assert (masked[y0:y1, x0:x1] == 128).all()
