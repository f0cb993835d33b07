"""Orbax checkpoints of a run (VQ-GAN, CLIP or decoder): WORKDIR/checkpoints/STEP holds named
items, each either an array tree (params, optimizer state; restored with the shapes and
shardings asked for) or a JSON record (config, vocabulary, data-iterator state)."""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from flax import nnx

from cm3jax.errors import UserError

SUBDIR = "checkpoints"


class Json(dict):
    """Marks an item to be saved as JSON rather than as arrays."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), SUBDIR)


class Checkpoints:
    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False, async_save: bool = True):
        """`keep`: how many of the newest steps a writing manager leaves on disk."""
        self.directory = checkpoint_dir(workdir)
        if read_only and not os.path.isdir(self.directory):
            raise UserError(f"No checkpoints in {self.directory}: the directory does not exist.")
        options = (ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None, save_interval_steps=0)
                   if read_only else
                   ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save))
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    @classmethod
    def open_latest(cls, workdir: str, what: str, train_command: str) -> tuple[Checkpoints, int]:
        """The workdir's checkpoints, read only, and their newest complete step; when there is
        none, a UserError naming `what` they hold and `train_command`, the command that trains one."""
        directory = checkpoint_dir(workdir)
        if not os.path.isdir(directory):
            raise UserError(f"No checkpoints in {directory}: the directory does not exist. Train the {what} with "
                            f"`{train_command}`.")
        checkpoints = cls(workdir, read_only=True)
        step = checkpoints.latest_step()
        if step is None:
            checkpoints.close()
            raise UserError(f"No complete {what} checkpoint in {directory} (no finished step directory). Train "
                            f"(or resume) with `{train_command}`.")
        return checkpoints, step

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def where(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, items: dict[str, Any]) -> None:
        args = {name: ocp.args.JsonSave(dict(value)) if isinstance(value, Json) else ocp.args.StandardSave(value)
                for name, value in items.items()}
        self.manager.save(step, args=ocp.args.Composite(**args), force=True)

    def restore(self, step: int, like: dict[str, Any]) -> dict[str, Any]:
        """Items by name; `like[name]` is an array tree (concrete or abstract, with shardings) or
        `Json` for a JSON item."""
        args = {name: ocp.args.JsonRestore() if isinstance(value, Json)
                else ocp.args.StandardRestore(jax.tree.map(_abstract, value)) for name, value in like.items()}
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax raises many types for missing, truncated or mismatched files
            raise UserError(f"Checkpoint {self.where(step)} is corrupt, incomplete or of another model "
                            f"({type(e).__name__}: {str(e)[:300]}). Delete that step directory to fall back to an "
                            f"earlier checkpoint, or start a new run in another workdir.") from None
        return {name: restored[name] for name in like}

    def restore_module(self, step: int, build: Callable[[], nnx.Module], item: str = "params",
                       as_state: bool = False) -> nnx.Module:
        """The module `build` makes, its state restored from `item` onto this process's first
        device, whatever topology trained it. The item holds the module's state as a pure dict
        (`nnx.to_pure_dict(nnx.state(m))`), or with `as_state` as the nnx.State `nnx.split` gives."""
        graphdef, abstract = nnx.split(nnx.eval_shape(build))
        local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
                            abstract if as_state else nnx.to_pure_dict(abstract))
        return nnx.merge(graphdef, self.restore(step, {item: like})[item])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return ocp.utils.to_shape_dtype_struct(x)
