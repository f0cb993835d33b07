"""Each task of the suite scored with a perfect generator (the renderer itself, the true text)
and with one that answers every prompt with the next prompt's answer: 100% and near 0."""

import types

import ml_collections
import numpy as np
import pytest

from cm3jax.data.shapes_tasks import TASKS as TRAINABLE
from cm3jax.eval import batched, shapes_tasks
from cm3jax.eval.shapes_tasks import TASKS, Context, infill_span
from cm3jax.shapes.dataset import WorldSpec
from tests.retrieval.bank_fixtures import fake_codes_of, make_codec

HEADLINE = {  # task -> the figures that must be 100% for a perfect generator
    "text_to_image": [("eval", "exact_match"), ("novel", "exact_match")],
    "likelihood": [("eval", "drawn_token_accuracy"), ("novel", "drawn_token_accuracy"),
                   ("eval", "with_2_retrieved", "drawn_token_accuracy")],
    "retrieval": [("eval", "by_retrieved", "2", "exact_match"), ("novel", "first_document_says_the_prompt"),
                  ("eval", "documents_hold_the_objects", "1")],
    "emblems": [("by_retrieved", "2", "emblem_exact_match"), ("first_document_is_the_emblem",)],
    "cfg": [("greedy", "7", "exact_match"), ("top_p", "1", "exact_match")],
    "decoding": [("mix", "8", "exact_match"), ("cd_k", "1", "any_exact"), ("top_p_unguided", "8", "exact_match")],
    "caption": [("exact_match",)], "caption_short": [("exact_match",)], "caption_long": [("exact_match",)],
    "infill": [("exact_match",)], "vqa": [("accuracy",)],
    "edit": [("exact_match",)], "grounding": [("iou_at_0.5",)],
    "structure": [("edge", "exact_match"), ("segmentation", "exact_match")],
}


class RankByPosition:
    """A stand-in CLIP that prefers a prompt's later samples: its pick is always the last."""

    def embed_texts(self, texts):
        return np.ones((len(texts), 1), np.float32)

    def embed_images(self, images):
        return (np.arange(len(images)) % 8).astype(np.float32)[:, None]


class EchoRetriever:
    """Retrieves, for each prompt, a document saying exactly the prompt."""

    def __init__(self, codec):
        self.codec = codec

    def for_prompts(self, captions, k, vocab):
        return [([self.codec.encode_text(c)] * k, [{"text": c, "score": 1.0}] * k) for c in captions]


def _context(tmp_path) -> Context:
    codec = make_codec()
    data = ml_collections.ConfigDict(dict(image_to_text=0.5, cm3_rate=0.5, cfg_dropout=0.1,
                                          tasks={t: 1.0 for t in TRAINABLE}))
    trained = types.SimpleNamespace(codec=codec, vocab=codec.vocab, step=0,
                                    encode_images=lambda images: np.stack([fake_codes_of(im) for im in images]),
                                    model=types.SimpleNamespace(config=types.SimpleNamespace(max_seq_len=512)),
                                    config=ml_collections.ConfigDict({"data": data}))
    return Context(trained, WorldSpec(num_train=300), 12, "eval", 0, str(tmp_path), EchoRetriever(codec),
                   RankByPosition(), progress=False)


def _truths(ctx: Context, task: str) -> list:
    """What a perfect generator returns to each call of the task, in order."""
    main, novel, emblems = (ctx.prompts(r).tasks for r in ("main", "novel", "emblems"))
    images = lambda tasks: np.stack([t.image for t in tasks])  # noqa: E731
    if task == "text_to_image":
        return [images(main), images(novel)]
    if task == "likelihood":
        return ["documents"] * 4  # made from the documents asked about: main and novel, 0 and 2 retrieved
    if task == "retrieval":
        return [images(main)] * 3 + [images(novel)] * 3
    if task == "emblems":
        return [images(emblems)] * 2
    if task == "cfg":
        return [images(main)] * 14
    if task == "decoding":
        return [np.repeat(images(main), 8, axis=0)] * len(shapes_tasks.DECODING)
    if task == "grounding":
        return [np.stack([t.grounding_image for t in main])]
    if task == "edit":
        return [np.stack([t.edit_image for t in main if t.edit_instruction])]
    if task == "structure":
        return [images(main)] * 2
    if task == "caption":
        return [[t.scene.caption for t in main]]
    if task in ("caption_short", "caption_long"):
        return [[getattr(t, task) for t in main]]
    if task == "vqa":
        return [[t.answer for t in main]]
    spans = [infill_span(ctx, t.scene.caption, i) for t, i in zip(main, ctx.prompts("main").indices)]
    return [[s[2] for s in spans if s is not None]]


def _figure(results: dict, path: tuple) -> float:
    for key in path:
        results = results[key]
    return results["rate"] if isinstance(results, dict) else results


def _next_tokens(documents, shift: int):
    """Teacher-forced scores that rank first each document's own next token (shift 0), or, for
    its image, the image of the document `shift` places on."""
    n, k = 64, len(documents)
    best = [np.concatenate([d[1:-n], documents[(i + shift) % k][-n:]]) for i, d in enumerate(documents)]
    return [np.full(len(d) - 1, -float(shift)) for d in documents], best


@pytest.mark.parametrize("task", list(TASKS))
def test_a_perfect_generator_scores_100_and_a_shifted_one_near_0(task, tmp_path, monkeypatch):
    ctx = _context(tmp_path)
    samples = 8 if task == "decoding" else 1  # rows per prompt: shift whole prompts
    for shift, expected in ((0, 1.0), (samples, 0.0)):
        queue = list(_truths(ctx, task))

        def answer(*args, **kwargs):
            assert queue, f"{task} asked for more outputs than it measures"
            given = queue.pop(0)
            if isinstance(given, str):
                return _next_tokens(args[1], shift)
            return np.roll(given, shift, axis=0) if isinstance(given, np.ndarray) else given[shift:] + given[:shift]

        monkeypatch.setattr(batched, "draw_images", answer)
        monkeypatch.setattr(batched, "write_texts", answer)
        monkeypatch.setattr(batched, "next_token_scores", answer)
        measured = TASKS[task].run(ctx)
        assert not queue, f"{task} measured fewer outputs than expected"
        for path in HEADLINE[task]:
            value = _figure(measured["results"], path)
            if any(key.startswith(("first_document", "documents_hold")) for key in path):
                assert value == 1.0  # the echo retriever finds the prompt itself
            elif expected == 1.0:
                ceiling = measured["results"].get("renderer_iou_at_0.5", {"rate": 1.0})["rate"]
                assert value == ceiling and ceiling >= 0.8, (path, value)
            else:
                assert value <= 0.35, (path, value)
        assert all((tmp_path / grid).read_bytes()[:4] == b"\x89PNG" for grid in measured.get("grids", []))


def test_documents_hold_counts_the_prompts_objects_their_texts_say(tmp_path):
    scenes = _context(tmp_path).prompts("main").scenes
    own = [[{"text": s.caption}] for s in scenes]
    others = [[{"text": "an image"}, {"text": t.caption}] for t in scenes[1:] + scenes[:1]]
    assert shapes_tasks._documents_hold(own, scenes, 1).value == 1.0
    assert shapes_tasks._documents_hold(others, scenes, 1).value == 0.0  # text outside the grammar holds nothing
    assert shapes_tasks._documents_hold(others, scenes, 2).value < 0.5
    mixed = [[b[1], a[0]] for a, b in zip(own, others)]
    held = shapes_tasks._documents_hold(mixed, scenes, 2)
    assert held.value == 1.0 and held.total == sum(len(s.objects) for s in scenes)
    image_only = [[{"text": None, "kind": "image"}] for _ in scenes]
    assert shapes_tasks._documents_hold(image_only, scenes, 1).value == 0.0
    assert shapes_tasks._first_document_says(image_only, scenes).value == 0.0


def test_infill_spans_are_whole_words_at_token_boundaries(tmp_path):
    ctx = _context(tmp_path)
    encode = ctx.trained.codec.encode_text
    for t, index in zip(ctx.prompts("main").tasks, ctx.prompts("main").indices):
        a, b, words = infill_span(ctx, t.scene.caption, index)
        ids = encode(t.scene.caption)
        assert 1 <= len(words.split()) <= 2 and words in t.scene.caption
        assert ctx.trained.codec.decode(ids[a:b])[0].text.strip() == words


def test_every_figure_names_its_settings_seed_and_prompt_set(tmp_path, monkeypatch):
    ctx = _context(tmp_path)
    monkeypatch.setattr(batched, "draw_images", lambda trained, requests, settings, seed, bar: np.stack(
        [np.zeros((32, 32, 3), np.uint8)] * len(requests)))
    measured = shapes_tasks.text_to_image(ctx)["results"]["novel"]
    assert measured["prompt_set"] == "novel" and measured["fingerprint"] == ctx.prompts("novel").fingerprint
    assert measured["settings"]["strategy"] == "greedy" and measured["seed"] == 0
