"""Trains the VQ-GAN image tokenizer on the Shapes world (recipe: tokenizers/vqgan_shapes.py).

    cm3jax tokenizer image --config tokenizers/vqgan_shapes.py:default --workdir runs/vqgan_shapes

Flax NNX used functionally (cm3jax/image_tokenizer/step.py): a jitted pure step maps
(state, opt_state, batch, rng) to new ones; the global batch is sharded over every device
along 'data'. Orbax checkpoints every `checkpoint_every` steps; running the same command
again resumes from the newest one and replays exactly the batches and random draws an
uninterrupted run would have used. The run ends with an eval on Shapes `eval` scenes
(exact match by the Shapes scorer, codebook usage, perplexity), a PNG of reconstructions,
a loss-curve PNG and WORKDIR/metrics.jsonl.

The tokenizer's public surface for other stages lives here too: `load_tokenizer`,
`encode_images`, `decode_codes`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from cm3jax import training_loop
from cm3jax.checkpoints import Checkpoints
from cm3jax.config import to_json_dict
from cm3jax.errors import UserError
from cm3jax.image_tokenizer import checkpoints
from cm3jax.image_tokenizer.checkpoints import load_tokenizer
from cm3jax.image_tokenizer.codebook import code_bits_given_patch, usage_and_perplexity
from cm3jax.image_tokenizer.codec import batch_sharding, decode_codes, encode_images, replicated
from cm3jax.image_tokenizer.data import TrainImages, render_split
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.recipe import check_recipe
from cm3jax.image_tokenizer.report import save_loss_curves, save_reconstruction_grid
from cm3jax.image_tokenizer.step import make_key, train_programs
from cm3jax.run_log import RunLog
from cm3jax.shapes.score import score, score_scene

__all__ = ["train", "evaluate", "load_tokenizer", "encode_images", "decode_codes"]

RECONSTRUCTIONS_PNG = "reconstructions.png"
LOSS_CURVES_PNG = "loss_curves.png"
SCORED_KEYS = ("exact_match", "color", "shape", "size", "position", "count", "background",
               "emblem_exact_match", "emblem_pixel_accuracy")


def evaluate(model: VQGAN, scenes, images_NRR3: np.ndarray) -> tuple[dict[str, Any], np.ndarray, list[bool]]:
    """Encode -> decode -> Shapes scorer. Returns (metrics, uint8 reconstructions, exact per scene)."""
    codes = encode_images(model, images_NRR3)
    reconstructions = decode_codes(model, codes)
    report = score(scenes, reconstructions)
    exact = [score_scene(s, r).exact for s, r in zip(scenes, reconstructions)]
    usage, perplexity = usage_and_perplexity(np.bincount(codes.ravel(), minlength=model.config.codebook_size))
    metrics = {k: report[k] for k in SCORED_KEYS}
    metrics.update(num_scenes=len(scenes), code_usage=usage, perplexity=perplexity,
                   code_bits_given_patch=code_bits_given_patch(images_NRR3, codes),
                   pixel_exact=float(np.mean(np.all(reconstructions == images_NRR3, axis=(1, 2, 3)))))
    return metrics, reconstructions, exact


def _check_resumable(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: str) -> None:
    for section in ("model", "data"):
        if to_json_dict(saved[section]) != to_json_dict(config[section]):
            raise UserError(f"{workdir} holds a run whose config.{section} differs from this one; resuming would "
                            f"mix two tokenizers. Use a fresh --workdir, or delete {workdir} to start over.")
    for key in ("batch_size", "seed", "discriminator"):
        if to_json_dict(saved.training)[key] != to_json_dict(config.training)[key]:
            raise UserError(f"{workdir} holds a run with a different training.{key}; use a fresh --workdir, "
                            f"or the same value to resume it.")


def _restore_or_init(store: Checkpoints, config: ml_collections.ConfigDict, workdir: str,
                     programs) -> tuple[int, dict, dict]:
    step = store.latest_step() or 0
    if step:
        _check_resumable(checkpoints.restore_config(store, step), config, workdir)
    state, opt_state = programs.init()
    if step:
        state, opt_state = checkpoints.restore(store, step, state, opt_state)
    return step, jax.device_put(state, replicated()), jax.device_put(opt_state, replicated())


def train(config: ml_collections.ConfigDict, workdir: str, *, stop_at_step: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Trains (or resumes) the tokenizer in `workdir` and returns the final metrics.

    `stop_at_step` ends this invocation early after a checkpoint there (a time-sliced job);
    running again continues. The final eval, the PNGs and the `end` record of metrics.jsonl
    come once `training.steps` is reached."""
    started = time.perf_counter()
    check_recipe(config)
    t = config.training
    if t.batch_size % jax.device_count():
        raise UserError(f"config.training.batch_size={t.batch_size} must be a multiple of the "
                        f"{jax.device_count()} devices the batch is split over.")
    os.makedirs(workdir, exist_ok=True)
    programs = train_programs(config)
    with Checkpoints(workdir, keep=t.keep_checkpoints) as store:
        first_step, state, opt_state = _restore_or_init(store, config, workdir, programs)
        log = RunLog(workdir, first_step, t.steps)
        _, train_images = render_split("train", config.data.num_train_scenes, config.data.seed,
                                       config.data.resolution, progress)
        batches = TrainImages(train_images, t.batch_size, t.seed)
        eval_scenes, eval_images = render_split("eval", t.eval_scenes, config.data.eval_seed,
                                                config.data.resolution, progress)
        base_rng = make_key(t.seed)
        last_eval = None

        def step_fn(carry: tuple[dict, dict], step: int):
            batch = jax.device_put(batches.batch(step), batch_sharding())
            state, opt_state, metrics = programs.step_at(step)(*carry, batch, jax.random.fold_in(base_rng, step))
            return (state, opt_state), metrics

        def run_eval(at_step: int, carry: tuple[dict, dict]) -> tuple[dict, np.ndarray, list[bool]]:
            nonlocal last_eval
            result = evaluate(nnx.merge(programs.graphdef, carry[0]["params"]), eval_scenes, eval_images)
            log.append({"kind": "eval", "step": at_step, **result[0]})
            last_eval = result[0]
            tqdm.write(f"step {at_step}: eval exact match {last_eval['exact_match']:.4f}, code usage "
                       f"{last_eval['code_usage']:.3f}, perplexity {last_eval['perplexity']:.1f}, bits of a code its "
                       f"patch does not show {last_eval['code_bits_given_patch']:.2f}")
            return result

        schedule = training_loop.Schedule(
            t.steps, t.log_every, t.checkpoint_every, stop_at_step,
            "Lower config.training.learning_rate or raise config.training.warmup_steps, then run the command again.")
        loop_started = time.perf_counter()
        (state, opt_state), step = training_loop.run(
            (state, opt_state), step_fn, first_step, schedule,
            save=lambda at_step, carry: checkpoints.save(store, at_step, *carry, config), log=log.append,
            desc="vqgan", progress=progress, evaluate=run_eval, evaluate_every=t.eval_every,
            postfix=lambda r: {"loss": f"{r['loss']:.4f}", "usage": f"{r['code_usage']:.2f}",
                               "ppl": f"{r['perplexity']:.0f}"})
        train_seconds = time.perf_counter() - loop_started
        summary = training_loop.summary(first_step, step, train_seconds)
        if step < t.steps:
            return {**summary, "finished": False, "last_eval": last_eval}
        metrics, reconstructions, exact = run_eval(step, (state, opt_state))
    save_reconstruction_grid(os.path.join(workdir, RECONSTRUCTIONS_PNG), eval_scenes, eval_images,
                             reconstructions, exact)
    save_loss_curves(os.path.join(workdir, LOSS_CURVES_PNG), log.records)
    summary.update(finished=True, total_seconds=time.perf_counter() - started,
                   **{f"eval/{k}": v for k, v in metrics.items()})
    log.append({"kind": "end", **summary})
    return summary
