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

from cm3jax.errors import UserError
from cm3jax.image_tokenizer import checkpoints
from cm3jax.image_tokenizer.checkpoints import load_tokenizer
from cm3jax.image_tokenizer.codebook import usage_and_perplexity
from cm3jax.image_tokenizer.codec import batch_sharding, decode_codes, encode_images, replicated
from cm3jax.image_tokenizer.data import TrainImages, render_split
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.report import save_loss_curves, save_reconstruction_grid
from cm3jax.run_log import RunLog
from cm3jax.image_tokenizer.settings import check_recipe, to_json_dict
from cm3jax.image_tokenizer.step import make_key, train_programs
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
                   pixel_exact=float(np.mean(np.all(reconstructions == images_NRR3, axis=(1, 2, 3)))))
    return metrics, reconstructions, exact


def _checkpoint_items(state: dict, opt_state: dict) -> tuple[dict, dict]:
    """(VQGAN params, everything else a resume needs)."""
    return state["params"], {"opt_state": opt_state, **{k: v for k, v in state.items() if k != "params"}}


def _check_resumable(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict, workdir: str) -> None:
    for section in ("model", "data"):
        if to_json_dict(saved[section]) != to_json_dict(config[section]):
            raise UserError(f"{workdir} holds a run whose config.{section} differs from this one; resuming would "
                            f"mix two tokenizers. Use a fresh --workdir, or delete {workdir} to start over.")
    for key in ("batch_size", "seed", "discriminator"):
        if to_json_dict(saved.training)[key] != to_json_dict(config.training)[key]:
            raise UserError(f"{workdir} holds a run with a different training.{key}; use a fresh --workdir, "
                            f"or the same value to resume it.")


def _restore_or_init(mngr, config: ml_collections.ConfigDict, workdir: str, programs) -> tuple[int, dict, dict]:
    step = mngr.latest_step() or 0
    if step:
        _check_resumable(checkpoints.restore_config(mngr, step), config, workdir)
    state, opt_state = programs.init()
    if step:
        params, rest = checkpoints.restore(mngr, step, *_checkpoint_items(state, opt_state))
        opt_state = rest.pop("opt_state")
        state = {"params": params, **rest}
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
    mngr = checkpoints.manager(workdir, keep=t.keep_checkpoints)
    try:
        step, state, opt_state = _restore_or_init(mngr, config, workdir, programs)
        log = RunLog(workdir, step, t.steps)
        _, train_images = render_split("train", config.data.num_train_scenes, config.data.seed,
                                       config.data.resolution, progress)
        batches = TrainImages(train_images, t.batch_size, t.seed)
        eval_scenes, eval_images = render_split("eval", t.eval_scenes, config.data.eval_seed,
                                                config.data.resolution, progress)

        def run_eval(at_step: int) -> tuple[dict, np.ndarray, list[bool]]:
            result = evaluate(nnx.merge(programs.graphdef, state["params"]), eval_scenes, eval_images)
            log.append({"kind": "eval", "step": at_step, **result[0]})
            return result

        def save(at_step: int) -> None:
            checkpoints.save(mngr, at_step, *_checkpoint_items(state, opt_state), config)

        base_rng = make_key(t.seed)
        end = t.steps if stop_at_step is None else min(stop_at_step, t.steps)
        first_step, pending, last_eval = step, [], None
        loop_started = time.perf_counter()
        with tqdm(total=t.steps, initial=step, desc="vqgan", unit="step", disable=not progress) as bar:
            try:
                while step < end:
                    batch = jax.device_put(batches.batch(step), batch_sharding())
                    state, opt_state, metrics = programs.step_at(step)(
                        state, opt_state, batch, jax.random.fold_in(base_rng, step))
                    step += 1
                    pending.append((step, metrics))
                    if step % t.log_every == 0 or step == end:
                        for logged_step, logged in jax.device_get(pending):
                            log.append({"kind": "train", "step": logged_step, **{k: float(v) for k, v in logged.items()}})
                        pending = []
                        last = log.records[-1]
                        bar.set_postfix(loss=f"{last['loss']:.4f}", usage=f"{last['code_usage']:.2f}",
                                        ppl=f"{last['perplexity']:.0f}", refresh=False)
                    bar.update(1)
                    if step % t.eval_every == 0 and step < t.steps:
                        last_eval = run_eval(step)[0]
                        bar.write(f"step {step}: eval exact match {last_eval['exact_match']:.4f}, code usage "
                                  f"{last_eval['code_usage']:.3f}, perplexity {last_eval['perplexity']:.1f}")
                    if step % t.checkpoint_every == 0 or step == end:
                        save(step)
            except KeyboardInterrupt:
                save(step)
                raise
        train_seconds = time.perf_counter() - loop_started
        summary = {"step": step, "steps_this_run": step - first_step, "train_seconds": train_seconds,
                   "steps_per_second": (step - first_step) / train_seconds if train_seconds > 0 else 0.0}
        if step < t.steps:
            return {**summary, "finished": False, "last_eval": last_eval}
        metrics, reconstructions, exact = run_eval(step)
    finally:
        mngr.wait_until_finished()
        mngr.close()
    save_reconstruction_grid(os.path.join(workdir, RECONSTRUCTIONS_PNG), eval_scenes, eval_images,
                             reconstructions, exact)
    save_loss_curves(os.path.join(workdir, LOSS_CURVES_PNG), log.records)
    summary.update(finished=True, total_seconds=time.perf_counter() - started,
                   **{f"eval/{k}": v for k, v in metrics.items()})
    log.append({"kind": "end", **summary})
    return summary
