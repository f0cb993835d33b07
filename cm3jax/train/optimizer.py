"""AdamW with linear warmup, linear decay and global-norm clipping (CM3: Adam 0.9/0.98, clip 1.0)."""

from __future__ import annotations

import jax
import optax

from cm3jax.errors import UserError


def learning_rate(peak: float, warmup_steps: int, total_steps: int, end_fraction: float) -> optax.Schedule:
    if total_steps <= warmup_steps:
        raise UserError(f"train.total steps ({total_steps}) must exceed train.warmup_steps ({warmup_steps}).")
    decay = optax.linear_schedule(peak, peak * end_fraction, total_steps - warmup_steps)
    if not warmup_steps:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])


FROZEN = ("image_codes",)  # parameters the model never trains (it reads them through stop_gradient)


def decay_mask(params):
    """Weight decay on matrices only: not on norm scales, biases or frozen parameters."""
    def named(path) -> set:
        return {str(getattr(k, "key", getattr(k, "name", k))) for k in path}
    return jax.tree_util.tree_map_with_path(lambda path, p: p.ndim >= 2 and not named(path) & set(FROZEN), params)


def make_optimizer(train, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(the optimizer, its learning-rate schedule)."""
    if train.optimizer != "adamw":
        raise UserError(f"train.optimizer {train.optimizer!r} is not supported; use 'adamw'.")
    schedule = learning_rate(train.peak_lr, train.warmup_steps, total_steps, train.end_lr_fraction)
    tx = optax.chain(
        optax.clip_by_global_norm(train.clip_norm),
        optax.adamw(schedule, b1=train.b1, b2=train.b2, eps=train.eps, weight_decay=train.weight_decay,
                    mask=decay_mask),
    )
    return tx, schedule


def updates_done(opt_state) -> jax.Array:
    """How many updates the optimizer has applied: the count its learning-rate schedule reads."""
    is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
    return next(s.count for s in jax.tree.leaves(opt_state, is_leaf=is_schedule) if is_schedule(s))
