"""The decoder training loop on Shapes: sharded, checkpointed, resumable, observable.

    cm3jax train --config experiments/shapes_tiny.py --workdir runs/shapes_tiny

Restarting the same command resumes from the newest checkpoint (parameters, optimizer,
step and the data iterator's position), so a resumed run reproduces an uninterrupted one.
SIGTERM saves a checkpoint and exits; a non-finite loss stops the run and keeps the last
good checkpoint.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import grain.python as grain
import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from cm3jax import training_loop
from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.config import decoder_config, with_recorded_paths
from cm3jax.data.pipeline import ObjectiveConfig, document_rows, global_batch, make_pipeline
from cm3jax.data.sft import TaskMixture
from cm3jax.data.shapes_tasks import (JoinedSource, ShapesMixture, ThrowawayEmblemMix, shapes_document,
                                      throwaway_context, training_share)
from cm3jax.data.tokenizers import load_codec
from cm3jax.distributed import maybe_initialize
from cm3jax.documents import DocumentCodec
from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_text
from cm3jax.image_tokenizer.codebook import (FACTOR_FEATURES, PIXEL_FEATURES, code_factors, codebook_features,
                                             pixel_features)
from cm3jax.image_tokenizer.codec import code_looks, encode_images
from cm3jax.image_tokenizer.report import save_loss_curves
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.retrieval.neighbours import sample_context
from cm3jax.retrieval.shapes_memory import retrieval_inputs
from cm3jax.shapes.dataset import data_source
from cm3jax.shapes.emblems import throwaway_patterns
from cm3jax.sharding import make_mesh, mesh_context, state_shardings
from cm3jax.train.metrics import MetricLogger
from cm3jax.train.optimizer import make_optimizer
from cm3jax.train.step import jit_train_step, loss_and_metrics, optimizer_shardings
from cm3jax.training_loop import Stopped
from cm3jax.vocab import MultimodalVocab
from cm3jax.workdir_lock import workdir_lock

__all__ = ["Stopped", "train", "eval_nll", "check_config", "mesh_shape"]

RESULTS_JSON = "results.json"  # the finished run's figures (cm3jax eval scores what it draws)


def mesh_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    fsdp, tensor = config.mesh.fsdp, config.mesh.tensor
    data = config.mesh.data if config.mesh.data > 0 else jax.device_count() // (fsdp * tensor)
    return data, fsdp, tensor


def check_config(config: ml_collections.ConfigDict) -> None:
    """What would fail only once training runs."""
    if config.train.seq_len > config.model.max_seq_len:
        raise UserError(f"train.seq_len={config.train.seq_len} exceeds model.max_seq_len={config.model.max_seq_len}: "
                        f"the model has no positions past its max_seq_len. Lower train.seq_len or raise "
                        f"model.max_seq_len to at least {config.train.seq_len}.")


def throwaway_codes(config: ml_collections.ConfigDict, tokenizer) -> np.ndarray | None:
    """The image codes of the run's invented emblem patterns, or None when it has none."""
    if not config.data.get("throwaway_emblems", 0.0):
        return None
    patterns = throwaway_patterns(config.data.throwaway_patterns, config.train.seed, tokenizer.config.resolution)
    return encode_images(tokenizer, patterns)


def is_instruction_tuning(config: ml_collections.ConfigDict) -> bool:
    """A config whose `data.tasks` weighs instruction-tuning tasks trains on their templates."""
    return bool(config.data.get("tasks"))


def _pipeline(config, codec, split: str, seed: int, repeat: bool, retrieval=None, throwaway=None):
    """The split's packed batches; with `retrieval` (bank, neighbours), each example after up
    to `data.retrieved_documents` of its offline neighbours; with `throwaway` (pattern codes), a
    share `data.throwaway_emblems` of the examples invented emblems after their documents. With
    `data.tasks`, the instruction-tuning mixture's rows instead (cm3jax.data.sft)."""
    tuning = is_instruction_tuning(config)
    source = grain.MapDataset.source(JoinedSource(config.data.shapes_dir, config.data.codes_dir, split,
                                                  codec.vocab.image_fingerprint, tasks=tuning))
    local_batch = config.train.batch_size // jax.process_count()
    if tuning:
        to_row = TaskMixture(dict(config.data.tasks), codec, config.train.seq_len, config.data.get("loss_on", "all"),
                             config.data.get("cfg_dropout", 0.0))
    else:
        to_row = _pretraining_rows(config, codec, split, retrieval, throwaway)
        if throwaway is not None:
            source = source.random_map(ThrowawayEmblemMix(throwaway, config.data.throwaway_emblems), seed=seed + 1)
    return make_pipeline(source, to_row, config.train.seq_len, local_batch, seed, jax.process_index(),
                         jax.process_count(), repeat=repeat)


def _pretraining_rows(config, codec, split: str, retrieval, throwaway):
    mixture = ShapesMixture(config.data.image_to_text, config.data.cfg_dropout)
    objective = ObjectiveConfig(config.data.cm3_rate, config.data.span_rate,
                                float(config.data.get("drawn_code_weight", 1.0)))
    bank, rows = (retrieval[0], retrieval[1][split]) if retrieval is not None else (None, None)

    alone = training_share("data.no_documents", float(config.data.get("no_documents", 0.0)))  # without documents

    def to_context(example, rng):
        invented = throwaway_context(example, codec)
        if invented is not None:
            return invented
        if bank is None or (alone and rng.random() < alone):
            return ()
        return sample_context(bank, rows[example["index"]], rng, config.data.retrieved_documents)

    return document_rows(functools.partial(shapes_document, mixture=mixture), codec, objective, config.train.seq_len,
                         to_context if retrieval is not None or throwaway is not None else None)


def _set_image_ids(config: ml_collections.ConfigDict, vocab: MultimodalVocab, tokenizer) -> None:
    """Checks the image switches against the tokenizer and gives the model the image ids they read."""
    model = config.model
    if model.get("image_positions", 0) and model.image_positions != vocab.image_tokens:
        raise UserError(f"model.image_positions is {model.image_positions} but the image tokenizer makes "
                        f"{vocab.image_tokens} tokens per image; set it to {vocab.image_tokens} (or 0).")
    features, source = model.get("image_code_features", 0), model.get("image_code_source", "codebook")
    width = {"codebook": tokenizer.config.embed_dim, "pixels": tokenizer.config.downsample_factor ** 2 * PIXEL_FEATURES,
             "factors": FACTOR_FEATURES}[source]
    if features and features != width:
        raise UserError(f"model.image_code_features is {features} but the image tokenizer's code vectors "
                        f"(image_code_source {source!r}) have {width} dimensions; set it to {width} (or 0).")
    if model.get("image_positions", 0) or features:
        model.image_id_start, model.image_id_end = vocab.image_offset, vocab.size


def with_code_vectors(params, config: ml_collections.ConfigDict, tokenizer):
    """A fresh model's parameters with the image tokenizer's code vectors (`image_code_source`)
    copied into `image_codes`."""
    if not config.model.get("image_code_features", 0):
        return params
    source = config.model.get("image_code_source", "codebook")
    if source == "codebook":
        vectors = codebook_features(tokenizer.quantize.embedding[...])
    elif source == "pixels":
        vectors = pixel_features(code_looks(tokenizer))
    else:
        images = factor_images(config, tokenizer)
        vectors = code_factors(images, encode_images(tokenizer, images), tokenizer.config.codebook_size)
    if jax.process_count() > 1:  # every process holds the same table, even where their CPUs round apart
        vectors = multihost_utils.broadcast_one_to_all(vectors)
    codes = params["image_codes"]
    codes[...] = jax.device_put(np.asarray(vectors), codes[...].sharding)
    return params


FACTOR_SCENES = 10_000  # training images that say what each code encodes


def factor_images(config: ml_collections.ConfigDict, tokenizer) -> np.ndarray:
    """uint8 [N, R, R, 3]: the images a run trains on that say what each code encodes: the first
    training scenes of its Shapes world and its invented emblem patterns (never the memory bank's
    unseen emblems)."""
    source = data_source(config.data.shapes_dir, "train")
    images = [source[i]["image"] for i in range(min(FACTOR_SCENES, len(source)))]
    if config.data.get("throwaway_emblems", 0.0):
        images += list(throwaway_patterns(config.data.throwaway_patterns, config.train.seed,
                                          tokenizer.config.resolution))
    return np.stack(images)


def _initial_params(params, config: ml_collections.ConfigDict, tokenizer):
    """A fresh run's parameters: those of the checkpoint it fine-tunes (`config.finetune`), else
    a new model's (with the tokenizer's code vectors where the model reads them)."""
    base = config.get("finetune")
    if not base:
        return with_code_vectors(params, config, tokenizer)
    with Checkpoints(base["from"], read_only=True) as checkpoints:
        return checkpoints.restore(base["step"], {"params": params})["params"]


def _check_resumable(saved: dict, config, vocab: MultimodalVocab, where: str) -> None:
    vocab.check_matches(MultimodalVocab.from_json(saved["vocab"]), f"checkpoint {where}")
    # a key the checkpoint predates had its default then
    saved_model = {**DecoderConfig.defaults(), **saved["config"]["model"]}
    changed = sorted(k for k in config.model if saved_model.get(k) != config.model[k])
    if changed:
        raise UserError(f"Checkpoint {where} was trained with other model settings ({', '.join(changed)}); "
                        f"use another --workdir or the same config.")


def train(config: ml_collections.ConfigDict, workdir: str, stop_at_step: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Trains to config.train.steps (or stops after `stop_at_step`, as a kill would) and returns
    the final metrics."""
    check_config(config)
    maybe_initialize(config)
    codec, image_tokenizer = load_codec(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.vocab_size = codec.vocab.padded_size
    _set_image_ids(config, codec.vocab, image_tokenizer)
    mesh = make_mesh(mesh_shape(config))
    with workdir_lock(workdir, f"cm3jax train --workdir {workdir}", jax.process_index()):
        return _train(config, workdir, codec, image_tokenizer, mesh, stop_at_step, progress)


def _train(config: ml_collections.ConfigDict, workdir: str, codec: DocumentCodec, image_tokenizer, mesh,
           stop_at_step: int | None, progress: bool) -> dict[str, Any]:
    model_config = decoder_config(config)
    total_steps = config.train.steps
    tx, learning_rate = make_optimizer(config.train, total_steps)

    abstract = nnx.eval_shape(lambda: Decoder(model_config, nnx.Rngs(config.train.seed)))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    param_shardings = state_shardings(abstract_params, mesh)
    init_params = jax.jit(lambda: nnx.split(Decoder(model_config, nnx.Rngs(config.train.seed)), nnx.Param)[1],
                          out_shardings=param_shardings)
    tuning = is_instruction_tuning(config)  # its rows read neither retrieved nor invented documents
    retrieval = None if tuning else retrieval_inputs(config, codec)
    data = iter(_pipeline(config, codec, "train", config.train.seed, repeat=True, retrieval=retrieval,
                          throwaway=None if tuning else throwaway_codes(config, image_tokenizer)))
    primary = jax.process_index() == 0  # the one process that writes logs and pictures
    with mesh_context(mesh):
        with Checkpoints(workdir, keep=config.checkpoint.keep) as checkpoints:
            start = checkpoints.latest_step() or 0
            params = init_params() if start else _initial_params(init_params(), config, image_tokenizer)
            opt_state = jax.jit(tx.init)(params)
            opt_state = jax.device_put(opt_state, optimizer_shardings(tx, opt_state, param_shardings, mesh))
            if start:
                saved = checkpoints.restore(start, {"config": Json(), "vocab": Json()})
                _check_resumable(saved, config, codec.vocab, checkpoints.where(start))
                restored = checkpoints.restore(start, {"params": params, "opt_state": opt_state, "data": Json()})
                params, opt_state = restored["params"], restored["opt_state"]
                data.set_state(restored["data"])
            train_step = jit_train_step(graphdef, tx, learning_rate, params, opt_state, mesh, config.train.z_loss)

            def step_fn(carry, _step: int):
                params, opt_state, metrics = train_step(*carry, global_batch(next(data), mesh))
                return (params, opt_state), metrics

            saved_config, saved_vocab = with_recorded_paths(config, workdir), codec.vocab.to_json()

            def save(at_step: int, carry) -> None:
                checkpoints.save(at_step, {"params": carry[0], "opt_state": carry[1], "data": Json(data.get_state()),
                                           "config": Json(saved_config), "vocab": Json(saved_vocab)})

            logger = MetricLogger(workdir, start, total_steps, config.train.log_every, primary)
            schedule = training_loop.Schedule(
                total_steps, config.train.log_every, config.checkpoint.every, stop_at_step,
                "Lower train.peak_lr or raise train.warmup_steps, then resume.")
            try:
                (params, opt_state), step = training_loop.run(
                    (params, opt_state), step_fn, start, schedule, save, logger.append, desc="train",
                    progress=progress and primary,
                    postfix=lambda r: {"loss": f"{r['loss']:.3f}", "tok_s": f"{r['tokens'] * r['steps_per_second']:.0f}"})
            finally:
                logger.close()
        records = logger.records
        results = {"step": step, "loss": records[-1]["loss"] if records else None}
        if step == total_steps:
            results["eval_nll"] = eval_nll(config, codec, graphdef, params, mesh, retrieval)
    if step == total_steps and primary:
        save_loss_curves(os.path.join(workdir, "loss.png"), records)
        atomic_write_text(os.path.join(workdir, RESULTS_JSON), json.dumps(results, indent=2) + "\n")
    return results


def eval_nll(config, codec: DocumentCodec, graphdef, params, mesh, retrieval=None) -> float:
    """Mean next-token loss over config.eval.batches eval batches (the same ones every time,
    and as many on every process)."""
    loss_fn = jax.jit(lambda p, b: loss_and_metrics(p, graphdef, b, 0.0)[1]["nll"])
    batches = iter(_pipeline(config, codec, "eval", seed=1234, repeat=True, retrieval=retrieval))
    return float(np.mean(jax.device_get([loss_fn(params, global_batch(next(batches), mesh))
                                         for _ in range(config.eval.batches)])))
