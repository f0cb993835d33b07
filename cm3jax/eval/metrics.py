"""Scores of what a model produced for each Shapes task against what it was asked, exactly: each
function takes the task's examples and the model's outputs in the same order. A rate comes with
its 95% interval (Wilson's score interval, which stays inside [0, 1] and is honest at 0% and
100%), so a report can say how many prompts a figure rests on. The renderer itself, or the true
text, scores 100% on every task (tests/eval/test_metrics.py).

    text_to_image(scenes, images)           exact match, per attribute, count, background
    emblem_copies(scenes, images)           pixels equal to the emblem asked for
    captions(scenes, texts, detail)         parsed caption == scene, and CIDEr-D (pycocoevalcap)
    answers(questions, truths, given)       VQA accuracy by question kind
    edits(edited_scenes, images, kinds)     the edited scene detected exactly, by edit kind
    grounding(scenes, images)               box IoU >= 0.5 rate and mean IoU over objects (and the renderer's)
    infills(truths, texts)                  the infilled text equals the removed span
    image_likelihood(grids, log_probs, best) the true images' codes under teacher forcing
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from typing import Sequence

import numpy as np
from pycocoevalcap.cider.cider import Cider
from scipy import ndimage

from cm3jax.errors import UserError
from cm3jax.shapes.captions import CaptionStyle, ParsedCaption, caption, describe, parse
from cm3jax.shapes.render import render
from cm3jax.shapes.scene import Scene
from cm3jax.shapes.score import ATTRIBUTES, score, score_scene
from cm3jax.shapes.spec import ShapesError

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
IOU_HIT = 0.5
QUESTION_KINDS = {  # question opening -> kind (cm3jax.shapes.tasks.vqa's templates)
    "how many": "count", "is there": "exists", "what color": "color", "where is": "where", "what size": "size",
    "which flag": "emblem",
}


@dataclasses.dataclass(frozen=True)
class Rate:
    """hits of total, with Wilson's 95% score interval."""
    hits: int
    total: int

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        if not self.total:
            return None
        n, p, z2 = self.total, self.hits / self.total, Z_95 ** 2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def to_json(self) -> dict:
        return {"rate": self.value, "hits": self.hits, "total": self.total,
                "ci95": None if self.interval is None else list(self.interval)}


def rate(flags) -> Rate:
    flags = [bool(f) for f in flags]
    return Rate(sum(flags), len(flags))


def _pair_up(what: str, asked: Sequence, produced: Sequence) -> None:
    if len(asked) != len(produced):
        raise UserError(f"{len(asked)} {what} but {len(produced)} outputs; give one output per {what[:-1]}, in order.")


def text_to_image(scenes: Sequence[Scene], images: np.ndarray) -> dict:
    """Over scenes: exact match (every object's colour, shape, size and position, the count and
    the background); over objects: each attribute; also count and background accuracy."""
    _pair_up("scenes", scenes, images)
    report = score(scenes, images)
    exact = Rate(round((report["exact_match"] or 0.0) * len(scenes)), len(scenes))
    return {"exact_match": exact.to_json(), **{k: report[k] for k in (*ATTRIBUTES, "count", "background")},
            "num_scenes": len(scenes)}


def image_likelihood(image_ids_NHW: np.ndarray, log_probs: Sequence[np.ndarray], best: Sequence[np.ndarray]) -> dict:
    """How well a model predicts true images, each token given the caption and the tokens before it:
    `image_ids_NHW` the images' token ids as code grids, against the last H * W of each document's
    `log_probs` and `best` (`batched.next_token_scores`). Nats per image; the share of tokens
    ranked first; that share over the tokens that draw something (all but the image's most
    frequent, its background), where a model that has learnt only backgrounds scores nothing; and
    over the drawn tokens after the first of their object (a 4-connected run of drawn tokens),
    which the tokens above and to the left already pin down: the first one is also where the
    object's unstated jitter is chosen."""
    image_ids_NHW = np.asarray(image_ids_NHW)
    _pair_up("images", image_ids_NHW, log_probs)
    n = image_ids_NHW[0].size if len(image_ids_NHW) else 0
    nats, right, counts = [], 0, collections.Counter()
    for grid, lp, top in zip(image_ids_NHW, log_probs, best):
        values, frequency = np.unique(grid, return_counts=True)
        drawn = grid != values[frequency.argmax()]
        hit = np.asarray(top[-n:]).reshape(grid.shape) == grid
        objects, _ = ndimage.label(drawn)
        _, first = np.unique(objects.ravel(), return_index=True)  # raster order: each object's first token
        continued = drawn.ravel().copy()
        continued[first] = False
        continued = continued.reshape(grid.shape)
        nats.append(-float(np.sum(lp[-n:])))
        right += int(hit.sum())
        counts.update(drawn=int(drawn.sum()), drawn_right=int(hit[drawn].sum()),
                      continued=int(continued.sum()), continued_right=int(hit[continued].sum()))
    share = lambda a, b: counts[a] / counts[b] if counts[b] else None  # noqa: E731
    return {"nats_per_image": float(np.mean(nats)) if nats else None,
            "token_accuracy": right / image_ids_NHW.size if image_ids_NHW.size else None,
            "drawn_token_accuracy": share("drawn_right", "drawn"),
            "continued_token_accuracy": share("continued_right", "continued"), "num_images": len(image_ids_NHW)}


def emblem_copies(scenes: Sequence[Scene], images: np.ndarray) -> dict:
    """For emblem scenes: the mean share of pixels equal to the emblem's pattern, and the rate of
    images the detector reads as exactly that emblem."""
    _pair_up("scenes", scenes, images)
    if any(s.emblem is None for s in scenes):
        raise UserError("emblem_copies scores emblem scenes only; score object scenes with text_to_image.")
    results = [score_scene(s, im) for s, im in zip(scenes, images)]
    return {"emblem_pixel_accuracy": float(np.mean([r.emblem_pixels for r in results])) if results else None,
            "emblem_exact_match": rate(r.exact for r in results).to_json(), "num_scenes": len(scenes)}


def _unordered(parsed: ParsedCaption) -> ParsedCaption:
    """A caption's objects as a set: objects never overlap in a captioned scene, so its image does not
    show the order they were painted (and listed) in."""
    objects = sorted(parsed.objects, key=lambda o: repr(dataclasses.astuple(o)))
    return dataclasses.replace(parsed, objects=tuple(objects))


def caption_is_exact(text: str, scene: Scene, detail: str = "full") -> bool:
    """The text parses back to what a caption of `detail` says of the scene, in any object order."""
    try:
        return _unordered(parse(text)) == _unordered(describe(scene, detail))
    except ShapesError:
        return False


def reference_captions(scene: Scene, detail: str) -> list[str]:
    """Every distinct caption of the grammar for a scene at `detail`, its objects in every order: the
    references CIDEr compares against (a paraphrase is as right as the caption the data happened to hold)."""
    return sorted({caption(scene.replace(objects=order), style, detail) for style in CaptionStyle.all()
                   for order in itertools.permutations(scene.objects)})


def captions(scenes: Sequence[Scene], texts: Sequence[str], detail: str = "full") -> dict:
    """Exact: the text parses back to what a caption of `detail` ("full", "short", "long") says of
    the scene. CIDEr-D against every paraphrase of the grammar (pycocoevalcap's implementation,
    whitespace tokens, lower case)."""
    _pair_up("scenes", scenes, texts)
    if not scenes:
        return {"exact_match": rate([]).to_json(), "parsed": rate([]).to_json(), "cider": None, "num_scenes": 0}
    parsed = []
    for text in texts:
        try:
            parse(text)
            parsed.append(True)
        except ShapesError:
            parsed.append(False)
    references = {i: [" ".join(r.lower().split()) for r in reference_captions(s, detail)] for i, s in enumerate(scenes)}
    candidates = {i: [" ".join(t.lower().split()) or "<empty>"] for i, t in enumerate(texts)}
    cider, _ = Cider().compute_score(references, candidates)
    return {"exact_match": rate(caption_is_exact(t, s, detail) for s, t in zip(scenes, texts)).to_json(),
            "parsed": rate(parsed).to_json(), "cider": float(cider), "num_scenes": len(scenes)}


def question_kind(question: str) -> str:
    for opening, kind in QUESTION_KINDS.items():
        if question.lower().startswith(opening):
            return kind
    raise UserError(f"Question {question!r} is not of the Shapes VQA kinds ({', '.join(QUESTION_KINDS)} ...).")


def _answer_words(text: str) -> str:
    return " ".join(text.lower().strip().rstrip(".").split())


def answers(questions: Sequence[str], truths: Sequence[str], given: Sequence[str]) -> dict:
    """VQA accuracy (the answer equals the truth, case, spacing and a final full stop aside),
    overall and by question kind."""
    _pair_up("questions", questions, given)
    _pair_up("questions", questions, truths)
    hits = [_answer_words(t) == _answer_words(g) for t, g in zip(truths, given)]
    by_kind = collections.defaultdict(list)
    for question, hit in zip(questions, hits):
        by_kind[question_kind(question)].append(hit)
    return {"accuracy": rate(hits).to_json(), "by_kind": {k: rate(v).to_json() for k, v in sorted(by_kind.items())},
            "num_questions": len(questions)}


def edits(edited_scenes: Sequence[Scene], images: np.ndarray, kinds: Sequence[str] | None = None) -> dict:
    """The rate of images the detector reads as exactly the edited scene, overall and by edit
    kind (recolor, move, remove, add) when `kinds` are given."""
    _pair_up("edited scenes", edited_scenes, images)
    hits = [score_scene(s, im).exact for s, im in zip(edited_scenes, images)]
    report = {"exact_match": rate(hits).to_json(), "num_edits": len(hits)}
    if kinds is not None:
        _pair_up("edited scenes", edited_scenes, kinds)
        by_kind = collections.defaultdict(list)
        for kind, hit in zip(kinds, hits):
            by_kind[kind].append(hit)
        report["by_kind"] = {k: rate(v).to_json() for k, v in sorted(by_kind.items())}
    return report


def _grounding_hits(scene: Scene, image) -> tuple[list[bool], list[float]]:
    result = score_scene(scene, image)
    right = [c and s for c, s in zip(result.attributes["color"], result.attributes["shape"])]
    return [ok and iou >= IOU_HIT for ok, iou in zip(right, result.box_ious)], list(result.box_ious)


def grounding(scenes: Sequence[Scene], images: np.ndarray) -> dict:
    """Over the objects placed at given boxes: the rate whose detected box overlaps the asked one
    at IoU >= 0.5 (with its colour and shape right), and the mean IoU (0 for an object not found).
    Objects may overlap, so even the renderer's own pictures miss a few (a later object covering
    an earlier one): `renderer_iou_at_0.5` is that ceiling."""
    _pair_up("scenes", scenes, images)
    hits, ious, ceiling = [], [], []
    for scene, image in zip(scenes, images):
        found, overlaps = _grounding_hits(scene, image)
        hits += found
        ious += overlaps
        ceiling += _grounding_hits(scene, render(scene))[0]
    return {"iou_at_0.5": rate(hits).to_json(), "mean_iou": float(np.mean(ious)) if ious else None,
            "renderer_iou_at_0.5": rate(ceiling).to_json(), "num_objects": len(ious)}


def infills(truths: Sequence[str], texts: Sequence[str]) -> dict:
    """The rate of infilled texts equal to the span that was removed (spacing aside)."""
    _pair_up("spans", truths, texts)
    return {"exact_match": rate(" ".join(t.split()) == " ".join(g.split()) for t, g in zip(truths, texts)).to_json(),
            "num_spans": len(truths)}
