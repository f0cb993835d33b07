"""AdamW with linear warmup, linear decay and global-norm clipping (CM3: Adam 0.9/0.98, clip 1.0)."""

from __future__ import annotations

import jax
import optax

from cm3jax.errors import UserError


def learning_rate(peak: float, warmup_steps: int, total_steps: int, end_fraction: float) -> optax.Schedule:
    if total_steps <= warmup_steps:
        raise UserError(f"train.total steps ({total_steps}) must exceed train.warmup_steps ({warmup_steps}).")
    return optax.join_schedules([
        optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
        optax.linear_schedule(peak, peak * end_fraction, total_steps - warmup_steps),
    ], [max(warmup_steps, 1)])


def decay_mask(params):
    """Weight decay on matrices only: not on norm scales or biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(train, total_steps: int) -> optax.GradientTransformation:
    if train.optimizer != "adamw":
        raise UserError(f"train.optimizer {train.optimizer!r} is not supported; use 'adamw'.")
    schedule = learning_rate(train.peak_lr, train.warmup_steps, total_steps, train.end_lr_fraction)
    return optax.chain(
        optax.clip_by_global_norm(train.clip_norm),
        optax.adamw(schedule, b1=train.b1, b2=train.b2, eps=train.eps, weight_decay=train.weight_decay,
                    mask=decay_mask),
    )
