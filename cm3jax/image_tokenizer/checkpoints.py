"""What a tokenizer run keeps in its checkpoints (cm3jax.checkpoints, WORKDIR/checkpoints/STEP):
`params` (the VQGAN's parameters), `train_state` (optimizer, code ages, discriminator) and
`config` (the recipe as JSON). `load_tokenizer` needs only the first and the last."""

from __future__ import annotations

import os

import ml_collections
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json, checkpoint_dir
from cm3jax.config import from_json_dict, to_json_dict
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.recipe import vqgan_config

TRAIN_COMMAND = "cm3jax tokenizer image --config tokenizers/vqgan_shapes.py:default --workdir {workdir}"


def save(checkpoints: Checkpoints, step: int, state: dict, opt_state: dict, config: ml_collections.ConfigDict) -> None:
    checkpoints.save(step, {"params": state["params"], "config": Json(to_json_dict(config)),
                            "train_state": {"opt_state": opt_state, **{k: v for k, v in state.items() if k != "params"}}})


def restore(checkpoints: Checkpoints, step: int, state_like: dict, opt_state_like: dict) -> tuple[dict, dict]:
    """(state, opt_state) restored into the structure, shapes and shardings of the given trees."""
    train_state_like = {"opt_state": opt_state_like, **{k: v for k, v in state_like.items() if k != "params"}}
    restored = checkpoints.restore(step, {"params": state_like["params"], "train_state": train_state_like})
    rest = dict(restored["train_state"])
    opt_state = rest.pop("opt_state")
    return {"params": restored["params"], **rest}, opt_state


def restore_config(checkpoints: Checkpoints, step: int) -> ml_collections.ConfigDict:
    saved = checkpoints.restore(step, {"config": Json()})["config"]
    if not isinstance(saved, dict) or "model" not in saved:
        raise UserError(f"Checkpoint {checkpoints.where(step)} holds no tokenizer config; was it written by "
                        f"`{TRAIN_COMMAND.format(workdir='...')}`?")
    return from_json_dict(saved)


def latest_step(workdir: str) -> int | None:
    """The newest complete checkpoint's step, or None when the run has none yet."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    with Checkpoints(workdir, read_only=True) as checkpoints:
        return checkpoints.latest_step()


def load_tokenizer(workdir: str) -> tuple[VQGAN, ml_collections.ConfigDict]:
    """The VQGAN of a run's newest checkpoint, and the recipe it was trained with."""
    checkpoints, step = Checkpoints.open_latest(workdir, "tokenizer", TRAIN_COMMAND.format(workdir=workdir))
    with checkpoints:
        config = restore_config(checkpoints, step)
        model = checkpoints.restore_module(step, lambda: VQGAN(vqgan_config(config), nnx.Rngs(0)))
    return model, config
