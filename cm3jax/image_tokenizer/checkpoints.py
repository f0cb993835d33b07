"""Orbax checkpoints of a tokenizer run, under WORKDIR/checkpoints/STEP with three items:
`params` (the VQGAN's parameters), `train_state` (optimizer, code ages, discriminator) and
`config` (the recipe as JSON). `load_tokenizer` needs only the first and the last."""

from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.settings import from_json_dict, to_json_dict, vqgan_config

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


def manager(workdir: str, keep: int = 2, read_only: bool = False) -> ocp.CheckpointManager:
    options = (ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None, save_interval_steps=0)
               if read_only else ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, params, train_state,
         config: ml_collections.ConfigDict) -> None:
    mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        train_state=ocp.args.StandardSave(train_state),
        config=ocp.args.JsonSave(to_json_dict(config))), force=True)


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def restore_config(mngr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
    where = os.path.join(str(mngr.directory), str(step))
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable files
        raise UserError(f"The config of checkpoint {where} is unreadable ({type(e).__name__}: {e}). Delete that "
                        f"step directory to fall back to an earlier checkpoint, or train again.") from None
    if not isinstance(restored.config, dict) or "model" not in restored.config:
        raise UserError(f"Checkpoint {where} holds no tokenizer config; was it written by "
                        f"cm3jax.image_tokenizer.train?")
    return from_json_dict(restored.config)


def restore(mngr: ocp.CheckpointManager, step: int, params_like, train_state_like=None):
    """(params, train_state) restored into the structure, shapes and shardings of the given
    trees; train_state is None unless asked for."""
    items = {"params": ocp.args.StandardRestore(_abstract(params_like))}
    if train_state_like is not None:
        items["train_state"] = ocp.args.StandardRestore(_abstract(train_state_like))
    where = os.path.join(str(mngr.directory), str(step))
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for missing or truncated files
        raise UserError(f"Checkpoint {where} is corrupt or incomplete ({type(e).__name__}: {e}). Delete that "
                        f"step directory to fall back to an earlier checkpoint, or train again.") from None
    return restored.params, (restored.train_state if train_state_like is not None else None)


def latest_step(workdir: str) -> int | None:
    """The newest complete checkpoint's step, or None when the run has none yet."""
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    mngr = manager(workdir, read_only=True)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def load_tokenizer(workdir: str) -> tuple[VQGAN, ml_collections.ConfigDict]:
    """The VQGAN of a run's newest checkpoint, and the recipe it was trained with."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise UserError(f"No tokenizer checkpoints in {directory}: the directory does not exist. Train one with "
                        f"`cm3jax tokenizer image --config tokenizers/vqgan_shapes.py:default --workdir {workdir}`.")
    mngr = manager(workdir, read_only=True)
    try:
        step = mngr.latest_step()
        if step is None:
            raise UserError(f"No complete tokenizer checkpoint in {directory} (no finished step directory). "
                            f"Train (or resume) with `cm3jax tokenizer image --workdir {workdir}`.")
        config = restore_config(mngr, step)
        abstract_model = nnx.eval_shape(lambda: VQGAN(vqgan_config(config), nnx.Rngs(0)))
        graphdef, abstract_state = nnx.split(abstract_model)
        # On this process's first device, whatever the topology the run was trained on.
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
                            abstract_state.to_pure_dict())
        params, _ = restore(mngr, step, like)
    finally:
        mngr.close()
    return nnx.merge(graphdef, params), config
