"""Trains the retriever's CLIP contrastively on the Shapes world (recipe: retrieval/clip_shapes.py).

    cm3jax retrieval clip --config retrieval/clip_shapes.py --workdir runs/clip_shapes

Pairs come from the Shapes `train` split and the memory bank (`memory`: one document per
emblem, all 32, and captioned scenes); never from `eval`, which measures the result. Texts
go through the project's sentencepiece tokenizer (copied into the workdir), images at their
native resolution through CLIP's normalisation. The loss is CLIP's symmetric InfoNCE with a
learned temperature; pairs whose captions say the same thing are all positives. Batches
(clip_data.py) recaption scenes in random productions of the grammar, mirror some left to
right (exact), pair scenes holding the same coloured shapes as hard negatives, oversample
the 32 emblem documents and put made-up words into some emblem texts. AdamW, a
jitted step on (params, opt_state, batch), orbax checkpoints that resume, tqdm, and at the
end WORKDIR/eval.json (and metrics.jsonl):

- text -> image recall@1/5 over the whole `eval` split (a hit: the top image shows what
  the caption says; `strict` demands the caption's own image), and image -> text recall@1;
- emblem retrieval: each emblem's name in every query template against the whole memory
  bank's document keys (text+image: normalised mean of both embeddings); rank-1 rate per
  template and overall, and the same against the 32 emblem documents alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from cm3jax import training_loop
from cm3jax.checkpoints import Checkpoints
from cm3jax.config import to_json_dict
from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_text
from cm3jax.retrieval.clip import CLIP, ClipConfig
from cm3jax.retrieval.clip_checkpoints import meta_record, read_meta, tokenizer_path
from cm3jax.retrieval.clip_data import HELD_OUT_SPLITS, Pairs, TrainBatches, emblem_text, load_pairs
from cm3jax.retrieval.clip_preprocess import normalize
from cm3jax.retrieval.clip_text import clip_vocab_size, encode_texts, eos_id
from cm3jax.retrieval.embedder import ClipEmbedder
from cm3jax.run_log import RunLog
from cm3jax.text_tokenizer import TextTokenizer

EVAL_JSON = "eval.json"
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the inverse temperature at 100
KEY_IMPL = "unsafe_rbg"  # cheap to compile on XLA:CPU, as deterministic


def clip_config(config: ml_collections.ConfigDict, tokenizer: TextTokenizer) -> ClipConfig:
    """The ClipConfig of a recipe: its model section plus the tokenizer's vocabulary and EOS."""
    fields = {f.name for f in dataclasses.fields(ClipConfig)} - {"vocab_size", "eos_token_id"}
    unknown = sorted(set(config.model) - fields)
    if unknown:
        raise UserError(f"config.model has keys ClipConfig does not know: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(fields))}.")
    return ClipConfig(**dict(config.model), vocab_size=clip_vocab_size(tokenizer),
                      eos_token_id=eos_id(tokenizer)).check()


def make_optimizer(t: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    if not 0 <= t.warmup_steps < t.steps:
        raise UserError(f"config.training.warmup_steps={t.warmup_steps} must lie in [0, training.steps={t.steps}).")
    schedule = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, t.warmup_steps, t.steps,
                                                  t.learning_rate * t.final_learning_rate_fraction)
    decay = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731  matrices only
    tx = optax.chain(optax.clip_by_global_norm(t.grad_clip_norm),
                     optax.adamw(schedule, b1=t.adam_b1, b2=t.adam_b2, weight_decay=t.weight_decay, mask=decay))
    return tx, schedule


def contrastive_loss(text_BP: jax.Array, image_BP: jax.Array, logit_scale: jax.Array,
                     keys_B: jax.Array) -> tuple[jax.Array, dict]:
    """Symmetric InfoNCE over normalised embeddings; rows with equal keys are all positives
    (the target spreads evenly over them)."""
    scale = jnp.exp(jnp.minimum(logit_scale, MAX_LOGIT_SCALE))
    logits_BB = scale * text_BP @ image_BP.T
    same_BB = (keys_B[:, None] == keys_B[None, :]).astype(jnp.float32)
    targets_BB = same_BB / jnp.sum(same_BB, axis=1, keepdims=True)  # symmetric, so rows serve both ways
    text_to_image = optax.softmax_cross_entropy(logits_BB, targets_BB).mean()
    image_to_text = optax.softmax_cross_entropy(logits_BB.T, targets_BB).mean()
    hit_B = jnp.take_along_axis(same_BB, jnp.argmax(logits_BB, axis=1)[:, None], axis=1)[:, 0]
    loss = (text_to_image + image_to_text) / 2
    return loss, {"loss": loss, "batch_accuracy": hit_B.mean(), "temperature": 1 / scale}


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule):
    """The jitted pure step (params, opt_state, step, pixels, ids, lengths, keys) -> (params, opt_state, metrics)."""
    def loss_fn(params, pixels_BHWC, ids_BT, lengths_B, keys_B):
        model = nnx.merge(graphdef, params)
        return contrastive_loss(model.embed_texts(ids_BT, lengths_B), model.embed_images(pixels_BHWC),
                                params["logit_scale"], keys_B)

    def step(params, opt_state, step_index, pixels_BHWC, ids_BT, lengths_B, keys_B):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, pixels_BHWC, ids_BT, lengths_B,
                                                                        keys_B)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics.update(grad_norm=optax.tree.norm(grads), learning_rate=schedule(step_index))
        return optax.apply_updates(params, updates), opt_state, metrics

    return jax.jit(step, donate_argnums=(0, 1))


@dataclasses.dataclass(frozen=True)
class TrainPrograms:
    graphdef: nnx.GraphDef
    init: Callable[[], tuple[dict, Any]]  # -> (params, opt_state), one compiled call
    step: Callable


def train_programs(model_config: ClipConfig, training: ml_collections.ConfigDict) -> TrainPrograms:
    """Built once per (model, training recipe) and process, so a resume or a second run reuses the compiles."""
    return _train_programs(model_config, json.dumps(to_json_dict(training), sort_keys=True))


@functools.lru_cache(maxsize=4)
def _train_programs(model_config: ClipConfig, training_json: str) -> TrainPrograms:
    t = ml_collections.ConfigDict(json.loads(training_json))
    tx, schedule = make_optimizer(t)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: CLIP(model_config, nnx.Rngs(0))))

    @jax.jit
    def build():
        params = nnx.to_pure_dict(nnx.state(CLIP(model_config, nnx.Rngs(jax.random.key(t.seed, impl=KEY_IMPL)))))
        return params, tx.init(params)

    def init():
        # Committed to one device, as restored arrays are, so a resumed run reuses the compiled step.
        return jax.device_put(build(), jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))

    return TrainPrograms(graphdef, init, make_train_step(graphdef, tx, schedule))


# ----------------------------------------------------------------------------- evaluation

def recall_metrics(sim_QG: np.ndarray, hit_QG: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    """recall@k: the share of queries with a hit among their k best-scored gallery items."""
    order = np.argsort(-sim_QG, axis=1, kind="stable")
    ranked_hits = np.take_along_axis(hit_QG, order, axis=1)
    return {f"recall@{k}": float(ranked_hits[:, :k].any(axis=1).mean()) for k in ks}


def evaluate(embedder: ClipEmbedder, eval_pairs: Pairs, memory: Pairs, templates) -> dict[str, Any]:
    text_ND = embedder.embed_texts(eval_pairs.captions)
    image_ND = embedder.embed_images(eval_pairs.images)
    keys = eval_pairs.keys()
    sim = text_ND @ image_ND.T
    same = keys[:, None] == keys[None, :]
    out: dict[str, Any] = {"eval_gallery": len(eval_pairs)}
    out.update({f"text_to_image/{k}": v for k, v in recall_metrics(sim, same).items()})
    out["text_to_image/strict_recall@1"] = recall_metrics(sim, np.eye(len(keys), dtype=bool), (1,))["recall@1"]
    out.update({f"image_to_text/{k}": v for k, v in recall_metrics(sim.T, same.T).items()})

    doc_keys = embedder.embed_documents(memory.captions, list(memory.images))
    emblem_rows = memory.emblem_documents()
    names = [memory.scenes[r].emblem for r in emblem_rows]
    per_template, per_template_32 = {}, {}
    for template in templates:
        query = embedder.embed_texts([emblem_text(n, template) for n in names])
        scores = query @ doc_keys.T
        per_template[template] = float(np.mean(np.argmax(scores, axis=1) == emblem_rows))
        per_template_32[template] = float(np.mean(np.argmax(scores[:, emblem_rows], axis=1) == np.arange(len(names))))
    out.update({"memory_bank_size": len(memory), "emblems": len(names),
                "emblem_rank1": float(np.mean(list(per_template.values()))),
                "emblem_rank1_min_template": float(min(per_template.values())),
                "emblem_rank1_among_emblem_docs": float(np.mean(list(per_template_32.values()))),
                "emblem_rank1_per_template": per_template})
    return out


# ----------------------------------------------------------------------------- the run

def _check_recipe(config: ml_collections.ConfigDict) -> None:
    held_out = sorted(set(config.data.train_splits) & set(HELD_OUT_SPLITS))
    if held_out:
        raise UserError(f"config.data.train_splits={tuple(config.data.train_splits)} includes {held_out}, the split "
                        f"the retriever is measured on; train on train and memory only.")
    if "memory" not in config.data.train_splits and config.data.emblem_share > 0:
        raise UserError("config.data.emblem_share > 0 draws the memory bank's emblem documents, but "
                        "config.data.train_splits lacks 'memory'; add it or set emblem_share=0.")


def _check_resumable(saved: dict, recipe: dict, workdir: str) -> None:
    for section in ("model", "data", "training"):
        a = {k: v for k, v in saved[section].items() if k not in ("log_every", "checkpoint_every", "keep_checkpoints")}
        b = {k: v for k, v in recipe[section].items() if k not in ("log_every", "checkpoint_every", "keep_checkpoints")}
        if a != b:
            changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise UserError(f"{workdir} holds a CLIP run whose config.{section} differs ({', '.join(changed)}); "
                            f"use a fresh --workdir, or delete {workdir} to start over.")


def _workdir_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> TextTokenizer:
    """The run's tokenizer: WORKDIR/text.model, copied there from config.data.text_tokenizer on the first run."""
    path = tokenizer_path(workdir)
    if os.path.exists(path):
        return TextTokenizer.load(path)
    tokenizer = TextTokenizer.load(config.data.text_tokenizer)
    tokenizer.save(path)
    return tokenizer


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the CLIP in `workdir`; returns the summary with the eval metrics.
    `stop_at_step` ends this invocation after a checkpoint there; running again continues."""
    started = time.perf_counter()
    _check_recipe(config)
    t = config.training
    os.makedirs(workdir, exist_ok=True)
    recipe = to_json_dict(config)
    with Checkpoints(workdir, keep=t.keep_checkpoints, async_save=False) as checkpoints:
        first_step = checkpoints.latest_step() or 0
        if first_step:
            meta = read_meta(checkpoints, first_step)
            _check_resumable(meta["recipe"], recipe, workdir)
        tokenizer = _workdir_tokenizer(config, workdir)
        if first_step and tokenizer.fingerprint != meta["text_tokenizer_sha256"]:
            raise UserError(f"{tokenizer_path(workdir)} is not the tokenizer the checkpoints were trained with; "
                            f"restore it or start a fresh --workdir.")
        model_config = clip_config(config, tokenizer)
        pairs = load_pairs(config.data.shapes_dir, config.data.train_splits, progress)
        if pairs.images.shape[1] != model_config.image_size:
            raise UserError(f"The Shapes images are {pairs.images.shape[1]} px but config.model.image_size="
                            f"{model_config.image_size}; train at the images' native resolution.")
        batches = TrainBatches(pairs, t.batch_size, t.seed, config.data.emblem_share, config.data.emblem_templates,
                               config.data.recaption, config.data.hard_share, config.data.mirror_rate,
                               config.data.emblem_noise_rate)
        programs = train_programs(model_config, t)
        params, opt_state = programs.init()
        if first_step:
            restored = checkpoints.restore(first_step, {"params": params, "opt_state": opt_state})
            params, opt_state = restored["params"], restored["opt_state"]
        log = RunLog(workdir, first_step, t.steps)

        def step_fn(carry, step: int):
            images, texts, keys = batches.batch(step)
            ids, lengths = encode_texts(tokenizer, texts, model_config.max_length)
            params, opt_state, metrics = programs.step(*carry, step, normalize(images), ids, lengths, keys)
            return (params, opt_state), metrics

        def save(at_step: int, carry) -> None:
            checkpoints.save(at_step, {"params": carry[0], "opt_state": carry[1],
                                       "meta": meta_record(recipe, model_config, tokenizer)})

        schedule = training_loop.Schedule(
            t.steps, t.log_every, t.checkpoint_every, stop_at_step,
            "Lower config.training.learning_rate or raise config.training.warmup_steps, then run the command again.")
        loop_started = time.perf_counter()
        (params, opt_state), step = training_loop.run(
            (params, opt_state), step_fn, first_step, schedule, save, log.append, desc="clip", progress=progress,
            postfix=lambda r: {"loss": f"{r['loss']:.3f}", "acc": f"{r['batch_accuracy']:.2f}",
                               "temp": f"{r['temperature']:.3f}"})
        train_seconds = time.perf_counter() - loop_started
    summary = training_loop.summary(first_step, step, train_seconds)
    if step < t.steps:
        return {**summary, "finished": False}
    embedder = ClipEmbedder(nnx.merge(programs.graphdef, params), tokenizer, progress=progress)
    eval_pairs = load_pairs(config.data.shapes_dir, HELD_OUT_SPLITS, progress)
    memory = load_pairs(config.data.shapes_dir, ("memory",), progress)
    metrics = evaluate(embedder, _first(eval_pairs, config.eval.num_eval), memory, config.eval.emblem_templates)
    log.append({"kind": "eval", "step": step, **metrics})
    summary.update(finished=True, total_seconds=time.perf_counter() - started, **metrics)
    atomic_write_text(os.path.join(workdir, EVAL_JSON), json.dumps(summary, indent=2) + "\n")
    log.append({"kind": "end", **{k: v for k, v in summary.items() if k != "emblem_rank1_per_template"}})
    return summary


def _first(pairs: Pairs, n: int) -> Pairs:
    """The first n pairs (all when n <= 0)."""
    if n <= 0 or n >= len(pairs):
        return pairs
    return Pairs(pairs.images[:n], pairs.scenes[:n], pairs.captions[:n], pairs.splits[:n])
