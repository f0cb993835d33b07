"""What a trained Shapes decoder draws, scored by the Shapes detector.

- `text_to_image`: greedy images for `eval` captions (no retrieval);
- with retrieval configured (`data.retrieval_bank`), also
  `text_to_image_retrieved`: the same captions after their `eval.retrieved` nearest documents
  by text (the offline neighbours of the `eval` split), and
  `emblems_unseen`: the emblems that never appear in a training sequence, drawn without and
  with retrieved documents (emblem pixel accuracy; CM3Leon can only draw these by copying a
  retrieved document), and how often the first retrieved document is the emblem asked for.
Each case also draws a captioned grid into the workdir.

    results = evaluate_run("runs/demo/decoder")   # also merged into WORKDIR/results.json
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import ml_collections
import numpy as np

from cm3jax.documents import DocumentCodec
from cm3jax.fileio import atomic_write_text
from cm3jax.image_tokenizer.codec import decode_codes
from cm3jax.retrieval.shapes_memory import retrieval_inputs
from cm3jax.sampling.inference import TrainedDecoder, with_context
from cm3jax.sampling.sampler import generate
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.shapes.dataset import data_source, scene_of
from cm3jax.shapes.preview import captioned_grid, save_png
from cm3jax.shapes.score import score, score_scene
from cm3jax.train.loop import RESULTS_JSON

SCORE_KEYS = ("exact_match", "color", "shape", "size", "position", "count")
EMBLEM_KEYS = ("emblem_pixel_accuracy", "emblem_exact_match")


def draw_captions(model, codec: DocumentCodec, image_model, captions: Sequence[str],
                  contexts: Sequence[Sequence[np.ndarray]] | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3]: one greedy image per caption, each after its retrieved documents
    (`contexts[i]`, most relevant first; those that do not fit in the context are left out)."""
    vocab = codec.vocab
    budget = model.config.max_seq_len - vocab.image_tokens
    requests = []
    for i, caption in enumerate(captions):
        prompt = np.concatenate([codec.encode_text(caption), [vocab.break_id]]).astype(np.int32)
        requests.append(with_context((prompt,), contexts[i] if contexts else (), vocab.eos_id, budget))
    generation = generate(model, vocab, requests, SamplingSettings(strategy="greedy"), vocab.image_tokens,
                          until="image")
    codes = vocab.codes(generation.tokens)
    return decode_codes(image_model, codes.reshape(len(captions), *codec.grid))


def evaluate_run(workdir: str, write: bool = True) -> dict:
    """Scores the newest checkpoint of a `cm3jax train` run (retrieval as its config has it);
    with `write`, draws the grids into the workdir and merges the scores into its results.json."""
    trained = TrainedDecoder.load(workdir)
    retrieval = retrieval_inputs(trained.config, trained.codec)
    results = evaluate(trained.config, trained.codec, trained.image_model, trained.model,
                       workdir if write else None, retrieval)
    if write:
        path = os.path.join(workdir, RESULTS_JSON)
        previous = {}
        if os.path.exists(path):
            with open(path) as f:
                previous = json.load(f)
        atomic_write_text(path, json.dumps({**previous, **results}, indent=2) + "\n")
    return results


def evaluate(config: ml_collections.ConfigDict, codec: DocumentCodec, image_model, model,
             workdir: str | None, retrieval=None) -> dict:
    """The scores above (grids into `workdir` when given); `retrieval` as `retrieval_inputs` gives."""
    eval_source = data_source(config.data.shapes_dir, "eval")
    scenes = [scene_of(eval_source[i]) for i in range(min(config.eval.samples, len(eval_source)))]
    results = {"text_to_image": _score_and_draw(model, codec, image_model, scenes, None, workdir, "samples.png")}
    if retrieval is None:
        return results
    bank, neighbours = retrieval
    contexts = _contexts(bank, neighbours["eval"][:len(scenes)], config.eval.retrieved)
    results["text_to_image_retrieved"] = _score_and_draw(model, codec, image_model, scenes, contexts, workdir,
                                                         "samples_retrieved.png")
    unseen_source = data_source(config.data.shapes_dir, "emblems_unseen")
    unseen = [scene_of(unseen_source[i]) for i in range(min(config.eval.samples, len(unseen_source)))]
    if unseen:
        rows = neighbours["emblems_unseen"][:len(unseen)]
        results["emblems_unseen"] = {
            "num_scenes": len(unseen),
            "no_retrieval": _score_and_draw(model, codec, image_model, unseen, None, workdir,
                                            "emblems_unseen.png", EMBLEM_KEYS),
            "retrieved": _score_and_draw(model, codec, image_model, unseen, _contexts(bank, rows, config.eval.retrieved),
                                         workdir, "emblems_unseen_retrieved.png", EMBLEM_KEYS),
            "first_document_is_the_emblem": _first_document_is_the_emblem(bank, unseen, rows),
        }
    return results


def _by_text(rows_NK: np.ndarray) -> np.ndarray:
    """The by-text half of stored neighbours (what a caption alone retrieves, as at inference)."""
    return rows_NK[:, :rows_NK.shape[1] // 2]


def _contexts(bank, rows_NK: np.ndarray, documents: int) -> list[list[np.ndarray]]:
    return [[bank.tokens(int(r)) for r in rows[rows >= 0][:documents]] for rows in _by_text(rows_NK)]


def _first_document_is_the_emblem(bank, scenes, rows_NK: np.ndarray) -> float:
    """Share of emblem scenes whose first document by text shows exactly that emblem."""
    hits = []
    for scene, rows in zip(scenes, _by_text(rows_NK)):
        found = rows[rows >= 0]
        image = bank.document(int(found[0])).image if len(found) else None
        hits.append(image is not None and score_scene(scene, image).emblem_pixels == 1.0)
    return float(np.mean(hits))


def _score_and_draw(model, codec, image_model, scenes, contexts, workdir: str | None, picture: str,
                    keys: Sequence[str] = SCORE_KEYS) -> dict:
    images = draw_captions(model, codec, image_model, [s.caption for s in scenes], contexts)
    if workdir is not None:
        marks = ["OK " if score_scene(s, im).exact else "MISS " for s, im in zip(scenes, images)]
        save_png(captioned_grid(images, [m + s.caption for m, s in zip(marks, scenes)]),
                 os.path.join(workdir, picture))
    report = score(scenes, images)
    return {k: report[k] for k in keys}
