"""The decoder training loop on Shapes: sharded, checkpointed, resumable, observable.

    cm3jax train --config experiments/shapes_tiny.py --workdir runs/shapes_tiny

Restarting the same command resumes from the newest checkpoint (parameters, optimizer,
step and the data iterator's position), so a resumed run reproduces an uninterrupted one.
SIGTERM saves a checkpoint and exits; a non-finite loss stops the run and keeps the last
good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.data.pipeline import ObjectiveConfig, global_batch, make_pipeline
from cm3jax.data.shapes_tasks import JoinedSource, ShapesMixture, shapes_document
from cm3jax.data.tokenizers import load_codec
from cm3jax.distributed import maybe_initialize
from cm3jax.documents import DocumentCodec
from cm3jax.errors import UserError
from cm3jax.config import decoder_config
from cm3jax.fileio import atomic_write_text
from cm3jax.image_tokenizer.report import save_loss_curves
from cm3jax.model.decoder import Decoder
from cm3jax.sharding import make_mesh, mesh_context, state_shardings
from cm3jax.text_tokenizer import TextTokenizer
from cm3jax.retrieval.shapes_memory import retrieval_inputs
from cm3jax.train.metrics import MetricLogger
from cm3jax.train.optimizer import make_optimizer
from cm3jax.train.step import jit_train_step, loss_and_metrics, optimizer_shardings
from cm3jax.vocab import MultimodalVocab


class Stopped(Exception):
    """SIGTERM arrived; a checkpoint was saved."""


def mesh_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    fsdp, tensor = config.mesh.fsdp, config.mesh.tensor
    data = config.mesh.data if config.mesh.data > 0 else jax.device_count() // (fsdp * tensor)
    return data, fsdp, tensor


def _pipeline(config, codec, split: str, seed: int, repeat: bool, retrieval=None):
    """The split's packed batches; with `retrieval` (bank, neighbours), each example after up
    to `data.retrieved_documents` of its offline neighbours."""
    source = JoinedSource(config.data.shapes_dir, config.data.codes_dir, split, codec.vocab.image_fingerprint)
    import grain.python as grain
    import functools
    mixture = ShapesMixture(config.data.image_to_text, config.data.cfg_dropout)
    objective = ObjectiveConfig(config.data.cm3_rate, config.data.span_rate)
    local_batch = config.train.batch_size // jax.process_count()
    to_context = None
    if retrieval is not None:
        from cm3jax.retrieval.neighbours import sample_context
        bank, rows = retrieval[0], retrieval[1][split]
        documents = config.data.retrieved_documents
        to_context = lambda example, rng: sample_context(bank, rows[example["index"]], rng, documents)  # noqa: E731
    return make_pipeline(grain.MapDataset.source(source), functools.partial(shapes_document, mixture=mixture),
                         codec, objective, config.train.seq_len, local_batch, seed,
                         jax.process_index(), jax.process_count(), repeat=repeat, to_context=to_context)


def _check_resumable(saved: dict, config, vocab: MultimodalVocab, where: str) -> None:
    vocab.check_matches(MultimodalVocab.from_json(saved["vocab"]), f"checkpoint {where}")
    if saved["config"]["model"] != config.model.to_dict():
        changed = sorted(k for k in config.model if saved["config"]["model"].get(k) != config.model[k])
        raise UserError(f"Checkpoint {where} was trained with other model settings ({', '.join(changed)}); "
                        f"use another --workdir or the same config.")


def train(config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Trains to config.train.steps (or stops after `stop_at_step`, as a kill would) and returns
    the final metrics."""
    maybe_initialize(config)
    codec, _ = load_codec(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.vocab_size = codec.vocab.padded_size
    model_config = decoder_config(config)
    mesh = make_mesh(mesh_shape(config))
    os.makedirs(workdir, exist_ok=True)
    total_steps = config.train.steps
    tx = make_optimizer(config.train, total_steps)

    abstract = nnx.eval_shape(lambda: Decoder(model_config, nnx.Rngs(config.train.seed)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    param_shardings = state_shardings(abstract_params, mesh)
    init_params = jax.jit(lambda: nnx.split(Decoder(model_config, nnx.Rngs(config.train.seed)), nnx.Param)[1],
                          out_shardings=param_shardings)
    checkpoints = Checkpoints(workdir, keep=config.checkpoint.keep)
    retrieval = retrieval_inputs(config, codec)
    data = iter(_pipeline(config, codec, "train", config.train.seed, repeat=True, retrieval=retrieval))
    with mesh_context(mesh):
        params = init_params()
        opt_state = jax.jit(tx.init)(params)
        opt_state = jax.device_put(opt_state, optimizer_shardings(tx, opt_state, param_shardings, mesh))
        step = 0
        latest = checkpoints.latest_step()
        if latest is not None:
            where = os.path.join(checkpoints.directory, str(latest))
            saved = checkpoints.restore(latest, {"config": Json(), "vocab": Json()})
            _check_resumable(saved, config, codec.vocab, where)
            restored = checkpoints.restore(latest, {"params": params, "opt_state": opt_state, "data": Json()})
            params, opt_state = restored["params"], restored["opt_state"]
            data.set_state(restored["data"])
            step = latest
        train_step = jit_train_step(graphdef, tx, params, opt_state, mesh, config.train.z_loss)

        def save(at_step: int) -> None:
            checkpoints.save(at_step, {"params": params, "opt_state": opt_state, "data": Json(data.get_state()),
                                       "config": Json(config.to_dict()), "vocab": Json(codec.vocab.to_json())})

        primary = jax.process_index() == 0  # the one process that writes logs and pictures
        logger = MetricLogger(workdir, step, total_steps, config.train.log_every, primary)
        records = logger.records
        terminated = []
        previous = signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
        last_good = step
        final_step = min(total_steps, stop_at_step) if stop_at_step is not None else total_steps
        bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not (progress and primary))
        started, tokens_seen = time.perf_counter(), 0.0
        try:
            while step < final_step:
                batch = global_batch(next(data), mesh)
                params, opt_state, metrics = train_step(params, opt_state, batch)
                step += 1
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not math.isfinite(metrics["loss"]):
                    raise UserError(f"The loss became {metrics['loss']} at step {step}; the run stopped and the last "
                                    f"good checkpoint (step {last_good}) is kept. Lower train.peak_lr or raise "
                                    f"train.warmup_steps, then resume.")
                tokens_seen += metrics["tokens"]
                record = {"step": step, **metrics, "lr": float(_lr(config, total_steps)(step - 1)),
                          "tokens_per_second": tokens_seen / (time.perf_counter() - started)}
                logger.log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{record['tokens_per_second']:.0f}")
                if step % config.checkpoint.every == 0 or step == total_steps:
                    save(step)
                    last_good = step
                if terminated:
                    save(step)
                    raise Stopped(f"SIGTERM at step {step}: checkpoint saved, resume with the same command.")
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            checkpoints.close()
            logger.close()
        results = {"step": step, "loss": records[-1]["loss"] if records else None}
        if step == total_steps:
            results["eval_nll"] = eval_nll(config, codec, graphdef, params, mesh, retrieval)
    if step == total_steps and primary:
        save_loss_curves(os.path.join(workdir, "loss.png"), records)
        atomic_write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
    return results


def _lr(config, total_steps: int) -> optax.Schedule:
    from cm3jax.train.optimizer import learning_rate
    return learning_rate(config.train.peak_lr, config.train.warmup_steps, total_steps, config.train.end_lr_fraction)


def eval_nll(config, codec: DocumentCodec, graphdef, params, mesh, retrieval=None) -> float:
    """Mean next-token loss over config.eval.batches eval batches (the same ones every time,
    and as many on every process)."""
    loss_fn = jax.jit(lambda p, b: loss_and_metrics(p, graphdef, b, 0.0)[1]["nll"])
    batches = iter(_pipeline(config, codec, "eval", seed=1234, repeat=True, retrieval=retrieval))
    return float(np.mean([float(loss_fn(params, global_batch(next(batches), mesh)))
                          for _ in range(config.eval.batches)]))
