"""The Shapes suite's tasks: each draws or writes for a fixed prompt set and scores what came out
with `cm3jax.eval.metrics`, recording every figure with its decoding settings, seed and the
prompt set's fingerprint, and drawing a grid a person can look at.

    text_to_image   eval (or dev) and novel captions, greedy, no retrieval
    likelihood      the same prompts' true images under teacher forcing: nats, codes ranked first
    retrieval       the same with 0, 1 and 2 retrieved documents (CM3Leon Table 1, in kind), and how
                    many of the prompts' objects those documents hold
    emblems         the unseen emblems with 0 and 2 retrieved documents (only a copy can draw them)
    cfg             classifier-free guidance scale 1..7, greedy and top-p (Figure 4, left)
    decoding        top-p, CD-K and their mix at CFG 3, top-p unguided; best of 1, 2, 4, 8 by CLIP (Figure 4, right)
    caption         image -> caption, parsed back to the scene; CIDEr-D
    infill          the CM3 infilling of caption words removed from a caption <break> image document
    vqa, edit, grounding, structure   the instruction-tuning tasks (docs/paper.md, Table 5)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from cm3jax.data.shapes_tasks import trained_tasks, trained_unconditionally
from cm3jax.documents import ImageSegment, TextSegment
from cm3jax.eval import batched, metrics
from cm3jax.eval.prompt_sets import PromptSet, draw, trained_meanings
from cm3jax.objectives import infill_prompt
from cm3jax.retrieval.embedder import ClipEmbedder
from cm3jax.retrieval.retriever import Retriever
from cm3jax import prompts
from cm3jax.sampling.inference import TrainedDecoder, with_context
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.shapes.captions import meaning, meaning_of, parse
from cm3jax.shapes.dataset import WorldSpec
from cm3jax.shapes.preview import captioned_grid, save_png
from cm3jax.shapes.render import render
from cm3jax.shapes.score import score_scene
from cm3jax.shapes.spec import ShapesError

GREEDY = SamplingSettings(strategy="greedy")
TOP_P = 0.9
CFG_SCALES = (1, 2, 3, 4, 5, 6, 7)
DECODING_CFG = 3.0  # the paper's guidance for its strategies; small models can do better without
DECODING = {
    "top_p": SamplingSettings(strategy="sample", temperature=1.0, top_p=TOP_P, cfg_scale=DECODING_CFG),
    "cd_k": SamplingSettings(strategy="cd_k", temperature=1.0, cfg_scale=DECODING_CFG),
    "mix": SamplingSettings(strategy="mix", temperature=1.0, top_p=TOP_P, cfg_scale=DECODING_CFG),
    "top_p_unguided": SamplingSettings(strategy="sample", temperature=1.0, top_p=TOP_P),
}
RERANKED = (1, 2, 4, 8)  # samples per prompt the re-ranker chooses among
RETRIEVED = (0, 1, 2)
EMBLEM_RETRIEVED = (0, 2)
EDIT_SCALES = {"image_scale": 1.5, "text_scale": 7.5}  # Chameleon's instruct guidance for editing
STRUCTURE_CFG = 3.0
GRID_PROMPTS = 8  # prompts shown in each grid
DEV_NOVEL_START = 100_000  # with the dev split, novel prompts come from here on (eval's start at 0)


@dataclasses.dataclass
class Context:
    """What every task reads: the model, its world, the prompt sets and the retrieval pieces."""
    trained: TrainedDecoder
    world: WorldSpec
    size: int  # prompts per set
    split: str  # "eval" or "dev": the set recipes are chosen on or reported with
    seed: int
    out: str
    retriever: Retriever | None = None
    clip: ClipEmbedder | None = None  # re-ranks samples (anything with embed_texts and embed_images)
    progress: bool = True
    no_retriever: str = "this checkpoint has no retriever; pass --index DIR"  # why `retriever` is None
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def _cached(self, key: tuple, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @functools.cached_property
    def tasks_trained(self) -> frozenset[str]:
        return trained_tasks(self.trained.config.data)

    def prompts(self, role: str) -> PromptSet:
        """The prompt set of a role: "main" (eval or dev), "novel" or "emblems" (the unseen ones)."""
        def make():
            trained = trained_meanings(self.world)
            if role == "main":
                return draw(self.world, self.split, self.size, trained)
            if role == "novel":
                return draw(self.world, "novel", self.size, trained, DEV_NOVEL_START if self.split == "dev" else 0)
            return draw(self.world, "emblems_unseen", self.size, trained)
        return self._cached(("prompts", role), make)

    def prompt_sets(self) -> dict[str, PromptSet]:
        """The sets drawn so far, by role."""
        return {key[1]: value for key, value in self._cache.items() if key[0] == "prompts"}

    def bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, unit="prompt", disable=not self.progress, leave=False, position=1)

    def record(self, prompt_set: PromptSet, settings: SamplingSettings, **more) -> dict:
        """The settings a figure was measured with."""
        return {"prompt_set": prompt_set.name, "fingerprint": prompt_set.fingerprint,
                "settings": dataclasses.asdict(settings), "seed": self.seed, **more}

    def documents(self, role: str) -> list[tuple[list[np.ndarray], list[dict]]]:
        """Each prompt's two retrieved documents (ids and records), most relevant first."""
        return self._cached(("documents", role), lambda: self.retriever.for_prompts(
            self.prompts(role).captions, max(RETRIEVED), self.trained.vocab))

    def codes(self, role: str, what: str = "image") -> np.ndarray:
        """Code grids of each prompt scene's `image`, `edges` or `segmentation` map (maps as grey RGB)."""
        def make():
            pictures = [getattr(t, what) for t in self.prompts(role).tasks]
            images = np.stack([np.repeat(p[..., None], 3, -1) if p.ndim == 2 else p for p in pictures])
            return self.trained.encode_images(images)
        return self._cached(("codes", role, what), make)

    def grid(self, name: str, images: Sequence[np.ndarray], labels: Sequence[str], columns: int) -> str:
        path = os.path.join(self.out, name)
        save_png(captioned_grid(np.stack(images), list(labels), columns), path)
        return os.path.basename(path)


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[Context], dict]
    trained_for: str  # the trained task it needs (cm3jax.data.shapes_tasks.TASKS)
    needs: Callable[[Context], str | None] = lambda ctx: None  # what else is missing, or None

    def not_trained(self, ctx: Context) -> str | None:
        if self.trained_for not in ctx.tasks_trained:
            return (f"the checkpoint was not trained for {self.trained_for} (it trained "
                    f"{', '.join(sorted(ctx.tasks_trained)) or 'nothing the suite knows'})")
        return None


# ----------------------------------------------------------------------------- requirements

def _needs_retriever(ctx: Context) -> str | None:
    return f"it retrieves documents, and {ctx.no_retriever}" if ctx.retriever is None else None


def _needs_unconditional(ctx: Context) -> str | None:
    if not trained_unconditionally(ctx.trained.config.data):
        return ("it guides with an unconditional stream, and this checkpoint never saw one "
                "(train with data.cfg_dropout > 0)")
    return None


def _needs_reranker(ctx: Context) -> str | None:
    if ctx.clip is None:
        return "it re-ranks samples by CLIP: pass --clip DIR (a `cm3jax retrieval clip` run) or --index DIR"
    return _needs_unconditional(ctx)


# ----------------------------------------------------------------------------- helpers

def _mark(ok: bool) -> str:
    return "OK " if ok else "MISS "


def _image_requests(ctx: Context, prompt_set: PromptSet, guided: bool, documents: int = 0,
                    role: str | None = None) -> list[tuple[np.ndarray, ...]]:
    trained = ctx.trained
    budget = trained.model.config.max_seq_len - trained.vocab.image_tokens
    retrieved = ctx.documents(role) if documents else [([], [])] * len(prompt_set.tasks)
    return [with_context(prompts.text_to_image(trained.codec, caption, guided), found[0][:documents],
                         trained.vocab.eos_id, budget)
            for caption, found in zip(prompt_set.captions, retrieved)]


def _draw(ctx: Context, requests, settings: SamplingSettings, desc: str) -> np.ndarray:
    with ctx.bar(len(requests), desc) as bar:
        return batched.draw_images(ctx.trained, requests, settings, ctx.seed, bar)


def _truths(prompt_set: PromptSet, n: int = GRID_PROMPTS) -> list[np.ndarray]:
    return [t.image for t in prompt_set.tasks[:n]]


def _side_by_side(ctx: Context, name: str, prompt_set: PromptSet, columns: dict[str, np.ndarray],
                  scenes=None) -> str:
    """A grid row per prompt: the scene asked for, then each column's image marked OK or MISS."""
    scenes = scenes or prompt_set.scenes
    images, labels = [], []
    for i, scene in enumerate(scenes[:GRID_PROMPTS]):
        images.append(render(scene))
        labels.append(f"asked: {scene.caption}")
        for title, column in columns.items():
            images.append(column[i])
            labels.append(_mark(score_scene(scene, column[i]).exact) + title)
    return ctx.grid(name, images, labels, 1 + len(columns))


# ----------------------------------------------------------------------------- image tasks

def text_to_image(ctx: Context) -> dict:
    results, grids = {}, []
    for role in ("main", "novel"):
        prompt_set = ctx.prompts(role)
        images = _draw(ctx, _image_requests(ctx, prompt_set, False), GREEDY, f"text -> image {prompt_set.name}")
        results[prompt_set.name] = {**metrics.text_to_image(prompt_set.scenes, images), **ctx.record(prompt_set, GREEDY)}
        grids.append(_side_by_side(ctx, f"text_to_image_{prompt_set.name}.png", prompt_set, {"greedy": images}))
    return {"results": results, "grids": grids}


def likelihood(ctx: Context) -> dict:
    """Each main and novel prompt's true image after its caption (caption <break> image), scored
    token by token: it moves long before a greedy sample is exactly right. With a retriever, also
    after the prompt's two retrieved documents (`with_2_retrieved`): what reading them is worth."""
    codec, results = ctx.trained.codec, {}
    for role in ("main", "novel"):
        prompt_set = ctx.prompts(role)
        images = [codec.encode_image(codes) for codes in ctx.codes(role)]
        grids = np.stack(images).reshape(len(images), *codec.grid)

        def scored(documents: int) -> dict:
            requests = _image_requests(ctx, prompt_set, False, documents, role)
            log_probs, best = batched.next_token_scores(
                ctx.trained, [np.concatenate([request[0], ids]) for request, ids in zip(requests, images)])
            return metrics.image_likelihood(grids, log_probs, best)

        results[prompt_set.name] = {**scored(0), **ctx.record(prompt_set, GREEDY, layout="caption <break> image")}
        if ctx.retriever is not None:
            results[prompt_set.name]["with_2_retrieved"] = {**scored(2), **ctx.record(prompt_set, GREEDY, retrieved=2)}
    return {"results": results}


def _first_document_says(records: Sequence[list[dict]], scenes) -> metrics.Rate:
    """How often the first retrieved document's text says exactly what the prompt asks for."""
    hits = []
    for found, scene in zip(records, scenes):
        try:
            hits.append(bool(found) and meaning_of(parse(found[0].get("text") or "")) == meaning(scene))
        except ShapesError:  # an image-only document, or text outside the grammar
            hits.append(False)
    return metrics.rate(hits)


def _documents_hold(records: Sequence[list[dict]], scenes, documents: int) -> metrics.Rate:
    """How many of the prompts' objects (shape, colour, size, cell) the first `documents` retrieved
    documents' texts also say: all a copy of parts of them could draw right."""
    hits = []
    for found, scene in zip(records, scenes):
        held = set()
        for record in found[:documents]:
            try:
                said = parse(record.get("text") or "")
            except ShapesError:  # an image-only document, or text outside the grammar
                continue
            held |= {(o.shape, o.color, o.size, o.position) for o in said.objects}
        hits += [o.describe() in held for o in scene.objects]
    return metrics.rate(hits)


def retrieval(ctx: Context) -> dict:
    results, grids = {}, []
    for role in ("main", "novel"):
        prompt_set = ctx.prompts(role)
        by_documents, columns = {}, {}
        for k in RETRIEVED:
            images = _draw(ctx, _image_requests(ctx, prompt_set, False, k, role), GREEDY,
                           f"retrieval {prompt_set.name} {k} docs")
            by_documents[str(k)] = {**metrics.text_to_image(prompt_set.scenes, images),
                                    **ctx.record(prompt_set, GREEDY, retrieved=k)}
            columns[f"{k} retrieved"] = images
        records = [r for _, r in ctx.documents(role)]
        shown = _first_document_says(records, prompt_set.scenes)
        held = {str(k): _documents_hold(records, prompt_set.scenes, k).to_json() for k in RETRIEVED if k}
        results[prompt_set.name] = {"by_retrieved": by_documents, "first_document_says_the_prompt": shown.to_json(),
                                    "documents_hold_the_objects": held}
        grids.append(_side_by_side(ctx, f"retrieval_{prompt_set.name}.png", prompt_set, columns))
    return {"results": results, "grids": grids}


def emblems(ctx: Context) -> dict:
    prompt_set = ctx.prompts("emblems")
    by_documents, columns = {}, {}
    for k in EMBLEM_RETRIEVED:
        images = _draw(ctx, _image_requests(ctx, prompt_set, False, k, "emblems"), GREEDY, f"emblems {k} docs")
        by_documents[str(k)] = {**metrics.emblem_copies(prompt_set.scenes, images),
                                **ctx.record(prompt_set, GREEDY, retrieved=k)}
        columns[f"{k} retrieved"] = images
    right = _first_document_says([r for _, r in ctx.documents("emblems")], prompt_set.scenes)
    results = {"by_retrieved": by_documents, "first_document_is_the_emblem": right.to_json(),
               "distinct_prompts": len(prompt_set.tasks)}
    return {"results": results, "grids": [_side_by_side(ctx, "emblems.png", prompt_set, columns)]}


def cfg(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    requests = _image_requests(ctx, prompt_set, True)
    results, columns = {}, {}
    for strategy, base in (("greedy", GREEDY), ("top_p", SamplingSettings(strategy="sample", top_p=TOP_P))):
        results[strategy] = {}
        for scale in CFG_SCALES:
            settings = dataclasses.replace(base, cfg_scale=float(scale))
            images = _draw(ctx, requests, settings, f"cfg {strategy} {scale}")
            results[strategy][str(scale)] = {**metrics.text_to_image(prompt_set.scenes, images),
                                             **ctx.record(prompt_set, settings)}
            if strategy == "greedy":
                columns[f"cfg {scale}"] = images
    return {"results": results, "grids": [_side_by_side(ctx, "cfg.png", prompt_set, columns)]}


def decoding(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    samples = max(RERANKED)
    results, grid_images, grid_labels = {}, [], []
    text_keys = ctx.clip.embed_texts(prompt_set.captions)
    for name, settings in DECODING.items():
        guided = settings.cfg_scale != 1.0 or settings.contrastive  # an unconditional stream is read
        requests = [r for r in _image_requests(ctx, prompt_set, guided) for _ in range(samples)]
        images = _draw(ctx, requests, settings, f"decoding {name}")
        images = images.reshape(len(prompt_set.tasks), samples, *images.shape[1:])
        exact = np.array([[score_scene(s, im).exact for im in row] for s, row in zip(prompt_set.scenes, images)])
        image_keys = ctx.clip.embed_images(images.reshape(-1, *images.shape[2:])).reshape(*images.shape[:2], -1)
        scores = np.einsum("psd,pd->ps", image_keys, text_keys)  # cosines: the keys are L2-normalised
        results[name] = {}
        for n in RERANKED:
            chosen = np.argmax(scores[:, :n], axis=1)
            results[name][str(n)] = {
                "exact_match": metrics.rate(exact[np.arange(len(exact)), chosen]).to_json(),
                "any_exact": metrics.rate(exact[:, :n].any(1)).to_json(),
                **ctx.record(prompt_set, settings, samples=n, reranked_by="clip")}
        for i, scene in enumerate(prompt_set.scenes[:GRID_PROMPTS // 2]):
            best = int(np.argmax(scores[i]))
            grid_images += [render(scene), *images[i]]
            grid_labels += [f"{name}: {scene.caption}"] + [
                ("CHOSEN " if j == best else "") + _mark(exact[i, j]) + f"clip {scores[i, j]:.2f}"
                for j in range(samples)]
    return {"results": results, "grids": [ctx.grid("decoding.png", grid_images, grid_labels, 1 + samples)]}


def grounding(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    scenes = [t.grounding_scene for t in prompt_set.tasks]
    requests = [prompts.text_to_image(ctx.trained.codec, s.caption, False) for s in scenes]
    images = _draw(ctx, requests, GREEDY, "grounding")
    results = {**metrics.grounding(scenes, images), **ctx.record(prompt_set, GREEDY)}
    return {"results": results, "grids": [_side_by_side(ctx, "grounding.png", prompt_set, {"greedy": images}, scenes)]}


def structure(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    settings = dataclasses.replace(GREEDY, cfg_scale=STRUCTURE_CFG)
    results, columns = {}, {}
    for kind, what in (("edge", "edges"), ("segmentation", "segmentation")):
        requests = [prompts.structure(ctx.trained.codec, c, kind, scene.caption, True)
                    for c, scene in zip(ctx.codes("main", what), prompt_set.scenes)]
        images = _draw(ctx, requests, settings, f"structure {kind}")
        results[kind] = {**metrics.text_to_image(prompt_set.scenes, images), **ctx.record(prompt_set, settings)}
        columns[f"from {kind}s"] = images
    return {"results": results, "grids": [_side_by_side(ctx, "structure.png", prompt_set, columns)]}


def edit(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    chosen = [i for i, t in enumerate(prompt_set.tasks) if t.edit_instruction]  # emblem scenes have no edit
    tasks = [prompt_set.tasks[i] for i in chosen]
    codes = ctx.codes("main")[chosen]
    settings = dataclasses.replace(GREEDY, **EDIT_SCALES)
    requests = [prompts.edit(ctx.trained.codec, c, t.edit_instruction, True) for c, t in zip(codes, tasks)]
    images = _draw(ctx, requests, settings, "edit")
    results = {**metrics.edits([t.edit_scene for t in tasks], images, [t.edit_kind for t in tasks]),
               **ctx.record(prompt_set, settings)}
    grid_images, labels = [], []
    for t, image in list(zip(tasks, images))[:GRID_PROMPTS]:
        grid_images += [t.image, t.edit_image, image]
        labels += [f"before: {t.scene.caption}", f"asked: {t.edit_instruction}",
                   _mark(score_scene(t.edit_scene, image).exact) + "edited"]
    return {"results": results, "grids": [ctx.grid("edit.png", grid_images, labels, 3)] if tasks else []}


# ----------------------------------------------------------------------------- text tasks

def _write(ctx: Context, requests, max_new: int, until: str, desc: str) -> list[str]:
    with ctx.bar(len(requests), desc) as bar:
        return batched.write_texts(ctx.trained, requests, GREEDY, max_new, until, ctx.seed, bar)


def _text_budget(ctx: Context, texts: Sequence[str], requests) -> int:
    """Tokens to write: the longest true answer's and a margin, within the context."""
    longest = max(len(ctx.trained.codec.encode_text(t)) for t in texts)
    room = ctx.trained.model.config.max_seq_len - max(len(p) for r in requests for p in r)
    return max(1, min(longest + 8, room))


def _text_grid(ctx: Context, name: str, prompt_set: PromptSet, labels: Sequence[str]) -> str:
    return ctx.grid(name, _truths(prompt_set), labels[:GRID_PROMPTS], 4)


def _captions(ctx: Context, detail: str) -> dict:
    """Image -> caption of `detail` (cm3jax.prompts.caption): exact when it parses back to what
    such a caption says of the scene."""
    prompt_set = ctx.prompts("main")
    truths = [t.scene.caption if detail == "full" else getattr(t, f"caption_{detail}") for t in prompt_set.tasks]
    requests = [prompts.caption(ctx.trained.codec, c, detail) for c in ctx.codes("main")]
    name = "caption" if detail == "full" else f"caption_{detail}"
    texts = [t.strip() for t in _write(ctx, requests, _text_budget(ctx, truths, requests), "eos", name)]
    results = {**metrics.captions(prompt_set.scenes, texts, detail), **ctx.record(prompt_set, GREEDY)}
    labels = [_mark(metrics.caption_is_exact(t, s, detail)) + t
              for s, t in zip(prompt_set.scenes, texts)]
    return {"results": results, "grids": [_text_grid(ctx, f"{name}.png", prompt_set, labels)],
            "examples": [{"asked": a, "written": t} for a, t in list(zip(truths, texts))[:16]]}


def caption(ctx: Context) -> dict:
    return _captions(ctx, "full")


def caption_short(ctx: Context) -> dict:
    return _captions(ctx, "short")


def caption_long(ctx: Context) -> dict:
    return _captions(ctx, "long")


def vqa(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    questions = [t.question for t in prompt_set.tasks]
    truths = [t.answer for t in prompt_set.tasks]
    requests = [prompts.answer(ctx.trained.codec, c, q) for c, q in zip(ctx.codes("main"), questions)]
    given = [a.strip().rstrip(".") for a in _write(ctx, requests, _text_budget(ctx, truths, requests), "eos", "vqa")]
    results = {**metrics.answers(questions, truths, given), **ctx.record(prompt_set, GREEDY)}
    labels = [f"{q} {_mark(a.lower() == g.lower())}{g} (truth {a})" for q, a, g in zip(questions, truths, given)]
    return {"results": results, "grids": [_text_grid(ctx, "vqa.png", prompt_set, labels)]}


def infill_span(ctx: Context, caption_text: str, index: int) -> tuple[int, int, str] | None:
    """A run of one or two whole words of a caption, as a token span [a, b) of the caption's
    ids and its text, drawn from (seed, index); None when no run's boundaries fall between tokens."""
    encode = ctx.trained.codec.encode_text
    words = caption_text.split()
    ids = encode(caption_text)
    rng = np.random.default_rng([ctx.seed, index])
    for _ in range(8):
        i = int(rng.integers(len(words)))
        j = min(len(words), i + int(rng.integers(1, 3)))
        start, stop = (encode(" ".join(words[:n])) if n else ids[:0] for n in (i, j))
        if len(start) < len(stop) and all(np.array_equal(p, ids[:len(p)]) for p in (start, stop)):
            return len(start), len(stop), " ".join(words[i:j])
    return None


def infill(ctx: Context) -> dict:
    prompt_set = ctx.prompts("main")
    codec = ctx.trained.codec
    requests, truths, kept = [], [], []
    for k, (t, codes) in enumerate(zip(prompt_set.tasks, ctx.codes("main"))):
        span = infill_span(ctx, t.scene.caption, prompt_set.indices[k])
        if span is None:
            continue
        a, b, words = span
        document = codec.encode((TextSegment(t.scene.caption), ImageSegment(codes)))
        requests.append((infill_prompt(document, codec.vocab, (a, b)),))
        truths.append(words)
        kept.append(k)
    texts = _write(ctx, requests, _text_budget(ctx, truths, requests), "span", "infill") if requests else []
    results = {**metrics.infills(truths, texts), **ctx.record(prompt_set, GREEDY, layout="caption <break> image")}
    labels = [f"{prompt_set.tasks[k].scene.caption} | {_mark(' '.join(g.split()) == w)}{g.strip()} (truth {w})"
              for k, w, g in zip(kept, truths, texts)]
    shown = [prompt_set.tasks[k].image for k in kept[:GRID_PROMPTS]]
    grids = [ctx.grid("infill.png", shown, labels[:GRID_PROMPTS], 4)] if shown else []
    return {"results": results, "grids": grids}


TASKS = {task.name: task for task in (
    Task("text_to_image", text_to_image, "text_to_image"),
    Task("likelihood", likelihood, "text_to_image"),
    Task("retrieval", retrieval, "text_to_image", _needs_retriever),
    Task("emblems", emblems, "text_to_image", _needs_retriever),
    Task("cfg", cfg, "text_to_image", _needs_unconditional),
    Task("decoding", decoding, "text_to_image", _needs_reranker),
    Task("caption", caption, "caption"),
    Task("caption_short", caption_short, "caption_short"),
    Task("caption_long", caption_long, "caption_long"),
    Task("infill", infill, "infill"),
    Task("vqa", vqa, "vqa"),
    Task("edit", edit, "edit"),
    Task("grounding", grounding, "grounding"),
    Task("structure", structure, "structure"),
)}
