"""Orbax checkpoints of a run: WORKDIR/checkpoints/STEP holds named items, each either an
array tree (params, optimizer state; restored with the shapes and shardings asked for) or
a JSON record (config, vocabulary, data-iterator state)."""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from cm3jax.errors import UserError

SUBDIR = "checkpoints"


class Json(dict):
    """Marks an item to be saved as JSON rather than as arrays."""


class Checkpoints:
    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), SUBDIR)
        if read_only and not os.path.isdir(self.directory):
            raise UserError(f"No checkpoints in {self.directory}: the directory does not exist.")
        options = (ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None, save_interval_steps=0)
                   if read_only else
                   ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save))
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, items: dict[str, Any]) -> None:
        args = {name: ocp.args.JsonSave(dict(value)) if isinstance(value, Json) else ocp.args.StandardSave(value)
                for name, value in items.items()}
        self.manager.save(step, args=ocp.args.Composite(**args), force=True)

    def restore(self, step: int, like: dict[str, Any]) -> dict[str, Any]:
        """Items by name; `like[name]` is an array tree (concrete or abstract, with shardings) or
        `Json` for a JSON item."""
        args = {name: ocp.args.JsonRestore() if isinstance(value, Json)
                else ocp.args.StandardRestore(jax.tree.map(_abstract, value)) for name, value in like.items()}
        where = os.path.join(self.directory, str(step))
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax raises many types for missing, truncated or mismatched files
            raise UserError(f"Checkpoint {where} is corrupt, incomplete or of another model "
                            f"({type(e).__name__}: {str(e)[:300]}). Delete that step directory to fall back to an "
                            f"earlier checkpoint, or start a new run in another workdir.") from None
        return {name: restored[name] for name in like}

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x):
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return ocp.utils.to_shape_dtype_struct(x)
