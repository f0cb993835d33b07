"""Instruction tuning: the decoder training loop started from a trained checkpoint, on the task
templates of `cm3jax.data.sft`.

    cm3jax finetune --config experiments/shapes_sft.py --from runs/demo/decoder --workdir runs/demo/sft

The tuned run's config is the base checkpoint's (its model, tokenizers and data) with the
instruction-tuning config's `train`, `checkpoint`, `eval` and `mesh`, its `data` keys (the task
mixture, the loss, condition dropout) and, for a rotary model, a longer `model.max_seq_len`.
It records where it started (`finetune.from`, `finetune.step`); resuming it is resuming any run.
"""

from __future__ import annotations

import os

import ml_collections

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.config import from_json_dict, with_found_paths
from cm3jax.errors import UserError

REPLACED = ("train", "checkpoint", "eval", "mesh")  # sections the tuning config brings whole
MODEL_KEYS = ("max_seq_len",)  # the model keys it may change


def finetune_config(tuning: ml_collections.ConfigDict, base_workdir: str) -> ml_collections.ConfigDict:
    """The config that tunes the newest checkpoint of `base_workdir` with `tuning`."""
    command = f"cm3jax train --workdir {base_workdir}"
    checkpoints, step = Checkpoints.open_latest(base_workdir, "decoder", command)
    with checkpoints:
        saved = checkpoints.restore(step, {"config": Json()})["config"]
    base = with_found_paths(from_json_dict(saved), base_workdir)
    if "tasks" not in tuning.get("data", {}):
        raise UserError("The instruction-tuning config has no data.tasks (task -> mixture weight); start from "
                        "experiments/shapes_sft.py.")
    config = ml_collections.ConfigDict(base.to_dict())
    for section in REPLACED:
        config[section] = ml_collections.ConfigDict(tuning[section].to_dict())
    for key, value in tuning.data.items():
        config.data[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    for key, value in tuning.get("model", {}).items():
        if key not in MODEL_KEYS:
            raise UserError(f"Instruction tuning keeps the base model; model.{key} cannot change (only "
                            f"{', '.join(MODEL_KEYS)}).")
        if value != config.model[key] and config.model.get("positions") != "rope":
            raise UserError(f"model.max_seq_len can grow only for rotary positions; {base_workdir} learned "
                            f"{config.model.max_seq_len} absolute positions. Tune with its max_seq_len.")
        config.model[key] = value
    config.finetune = ml_collections.ConfigDict({"from": os.path.abspath(base_workdir), "step": step})
    return config
