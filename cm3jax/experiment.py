"""The key set of a decoder experiment: every experiments/*.py file builds its config here,
so all experiments share one schema and an unknown override key is caught."""

from __future__ import annotations

import dataclasses

import ml_collections

from cm3jax.model.config import DecoderConfig


def decoder_experiment(model: dict, train: dict | None = None, paper_params: float | None = None
                       ) -> ml_collections.ConfigDict:
    defaults = {f.name: f.default for f in dataclasses.fields(DecoderConfig)
                if f.default is not dataclasses.MISSING}
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({**defaults, **model})
    config.train = ml_collections.ConfigDict({
        "seq_len": 512,
        "total_tokens": 0,
        "warmup_steps": 0,
        "peak_lr": 1e-3,
        "end_lr_fraction": 0.1,
        "optimizer": "adamw",
        "b1": 0.9,
        "b2": 0.98,
        "eps": 1e-8,
        "weight_decay": 0.1,
        "clip_norm": 1.0,
        "z_loss": 0.0,
        "steps": 0,
        "batch_size": 8,  # rows of seq_len tokens
        "seed": 0,
        "log_every": 50,  # steps per console / TensorBoard line (metrics.jsonl gets every step)
        **(train or {}),
    })
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.paper_params = paper_params or 0.0  # nominal size in the paper, for the size check
    return config


def decoder_config(config: ml_collections.ConfigDict) -> DecoderConfig:
    return DecoderConfig.from_dict(config.model.to_dict())
