"""Each task's score on cases whose answer is known: the renderer (or the true text) scores 100%,
a blank, shuffled or constant output scores at or near chance; rates carry Wilson intervals."""

import dataclasses

import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.eval import metrics
from cm3jax.shapes import tasks
from cm3jax.shapes.render import render
from cm3jax.shapes.spec import BACKGROUNDS
from cm3jax.shapes.world import sample_split

N = 60


@pytest.fixture(scope="module")
def scenes():
    return [s for s in sample_split("eval", N, seed=3) if s.emblem is None]


def _images(scenes):
    return np.stack([render(s) for s in scenes])


def _blank(scenes):
    return np.stack([np.full((s.resolution, s.resolution, 3), BACKGROUNDS[s.background], np.uint8) for s in scenes])


def _shuffled(items):
    """Each output given to the next example (no example keeps its own)."""
    return items[1:] + items[:1] if isinstance(items, list) else np.roll(items, 1, axis=0)


def test_wilson_intervals_match_the_textbook_values():
    assert metrics.Rate(5, 10).interval == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert metrics.Rate(0, 10).interval == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert metrics.Rate(10, 10).interval == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert metrics.Rate(0, 0).value is None and metrics.Rate(0, 0).interval is None
    assert metrics.rate([True, False, True, True]).to_json() == {
        "rate": 0.75, "hits": 3, "total": 4, "ci95": list(metrics.Rate(3, 4).interval)}
    narrow, wide = metrics.Rate(500, 1000).interval, metrics.Rate(50, 100).interval
    assert narrow[1] - narrow[0] < 0.07 < wide[1] - wide[0]  # +-3 points takes ~1,000 prompts


def test_text_to_image_perfect_blank_and_shuffled(scenes):
    perfect = metrics.text_to_image(scenes, _images(scenes))
    assert perfect["exact_match"]["rate"] == 1.0 and perfect["color"] == perfect["position"] == 1.0
    assert metrics.text_to_image(scenes, _blank(scenes))["exact_match"]["rate"] == 0.0
    shuffled = metrics.text_to_image(scenes, _shuffled(_images(scenes)))
    assert shuffled["exact_match"]["rate"] < 0.1 and shuffled["color"] < 0.5
    with pytest.raises(UserError, match="one output per scene"):
        metrics.text_to_image(scenes, _images(scenes)[:-1])


def test_emblem_copies_perfect_and_blank():
    emblems = sample_split("emblems_unseen", 16, seed=0)
    perfect = metrics.emblem_copies(emblems, _images(emblems))
    assert perfect["emblem_pixel_accuracy"] == 1.0 and perfect["emblem_exact_match"]["rate"] == 1.0
    blank = metrics.emblem_copies(emblems, np.zeros((16, 32, 32, 3), np.uint8))
    assert blank["emblem_pixel_accuracy"] < 0.5 and blank["emblem_exact_match"]["rate"] == 0.0
    with pytest.raises(UserError, match="emblem scenes only"):
        metrics.emblem_copies(sample_split("eval", 4, seed=0)[:1], _images(sample_split("eval", 4, seed=0)[:1]))


def test_captions_true_paraphrased_shuffled_and_garbage(scenes):
    true = [s.caption for s in scenes]
    perfect = metrics.captions(scenes, true)
    assert perfect["exact_match"]["rate"] == 1.0 and perfect["parsed"]["rate"] == 1.0
    paraphrased = metrics.captions(scenes, [metrics.reference_captions(s, "full")[-1] for s in scenes])
    assert paraphrased["exact_match"]["rate"] == 1.0
    shuffled = metrics.captions(scenes, _shuffled(true))
    assert shuffled["exact_match"]["rate"] < 0.05 and shuffled["parsed"]["rate"] == 1.0
    assert shuffled["cider"] < 0.5 * perfect["cider"]
    garbage = metrics.captions(scenes, ["the the the"] * len(scenes))
    assert garbage["parsed"]["rate"] == 0.0 and garbage["exact_match"]["rate"] == 0.0
    short = metrics.captions(scenes, [tasks.caption(s, tasks.CaptionStyle(), "short") for s in scenes], "short")
    assert short["exact_match"]["rate"] == 1.0
    several = [s for s in scenes if len(s.objects) > 1]
    style = tasks.CaptionStyle()
    in_order = [tasks.caption(s, style) for s in several]
    reversed_ = [tasks.caption(s.replace(objects=s.objects[::-1]), style) for s in several]
    assert all(r != o for r, o in zip(reversed_, in_order))
    reordered = metrics.captions(several, reversed_)
    assert reordered["exact_match"]["rate"] == 1.0, "the image does not show the order objects are listed in"
    assert reordered["cider"] == pytest.approx(metrics.captions(several, in_order)["cider"], rel=0.02)
    one_wrong = [s.replace(objects=(dataclasses.replace(s.objects[0], color="pink" if s.objects[0].color != "pink"
                                                        else "red"),) + s.objects[1:]) for s in several]
    assert metrics.captions(several, [tasks.caption(s, style) for s in one_wrong])["exact_match"]["rate"] == 0.0


def test_answers_by_kind(scenes):
    rng = np.random.default_rng(0)
    pairs = [tasks.vqa(s, rng) for s in scenes]
    questions, truths = [q for q, _ in pairs], [a for _, a in pairs]
    perfect = metrics.answers(questions, truths, [a.upper() + "." for a in truths])
    assert perfect["accuracy"]["rate"] == 1.0 and all(k["rate"] == 1.0 for k in perfect["by_kind"].values())
    assert set(perfect["by_kind"]) <= set(metrics.QUESTION_KINDS.values())
    yes = metrics.answers(questions, truths, ["yes"] * len(questions))
    assert all(k["rate"] == 0.0 for kind, k in yes["by_kind"].items() if kind != "exists")
    with pytest.raises(UserError, match="VQA kinds"):
        metrics.answers(["why?"], ["because"], ["because"])


def test_edits_perfect_and_unedited(scenes):
    rng = np.random.default_rng(1)
    done = [tasks.edit(s, rng) for s in scenes]
    after, before = [e.after for e in done], [e.before for e in done]
    perfect = metrics.edits(after, _images(after), [e.kind for e in done])
    assert perfect["exact_match"]["rate"] == 1.0 and set(perfect["by_kind"]) == set(tasks.EDIT_KINDS)
    assert metrics.edits(after, _images(before))["exact_match"]["rate"] == 0.0  # every edit changes the scene


def test_grounding_perfect_and_blank():
    rng = np.random.default_rng(2)
    grounded = [tasks.grounding_scene(f"g-{i}", rng) for i in range(40)]
    perfect = metrics.grounding(grounded, _images(grounded))
    assert perfect["iou_at_0.5"]["rate"] >= 0.9 and perfect["mean_iou"] >= 0.85  # later objects may cover earlier
    assert perfect["iou_at_0.5"] == perfect["renderer_iou_at_0.5"]
    assert metrics.grounding(grounded, _blank(grounded))["iou_at_0.5"]["rate"] == 0.0
    shuffled = metrics.grounding(grounded, _shuffled(_images(grounded)))
    assert shuffled["iou_at_0.5"]["rate"] < 0.2


def test_image_likelihood_counts_drawn_and_continued_tokens_apart_from_the_background():
    grids = np.array([[[7, 7, 3], [7, 3, 3], [3, 7, 7]],   # background 7; objects {3, 3, 3} and {3}
                      [[5, 5, 5], [5, 5, 5], [5, 2, 2]]])  # background 5; one object {2, 2}
    log_probs = [np.array([-9.0] + [-1.0] * 9), np.full(9, -1.0)]
    best = [np.array([0, 7, 7, 3, 7, 3, 9, 9, 7, 7]),  # misses the second object's only token and a continued 3
            np.array([5, 5, 5, 5, 5, 5, 5, 0, 2])]      # misses the second image's first drawn token
    measured = metrics.image_likelihood(grids, log_probs, best)
    assert measured["token_accuracy"] == 15 / 18 and measured["drawn_token_accuracy"] == 3 / 6
    assert measured["continued_token_accuracy"] == 2 / 3  # the 3s at (1, 1), (1, 2) and the 2 at (2, 2)
    assert measured["nats_per_image"] == 9.0 and measured["num_images"] == 2


def test_infills():
    assert metrics.infills(["red circle", "big"], ["red  circle", "big"])["exact_match"]["rate"] == 1.0
    assert metrics.infills(["red circle", "big"], ["blue circle", ""])["exact_match"]["rate"] == 0.0


def test_the_full_suite_size_bounds_every_interval_by_three_points():
    from cm3jax.eval.suite import SIZES
    n = SIZES["full"]
    widest = max(metrics.Rate(h, n).interval[1] - metrics.Rate(h, n).interval[0] for h in range(0, n + 1, 7))
    assert widest / 2 <= 0.03 and metrics.Rate(n // 2, n).interval[1] - 0.5 <= 0.03
    assert (metrics.Rate(n // 2 - 40, n - 80).interval[1] - metrics.Rate(n // 2 - 40, n - 80).value) > 0.03  # fewer would not
