"""The jitted, pure train step: (params, opt_state, batch) -> (params, opt_state, metrics).

A batch is a dict of [B, T] arrays: `inputs`, `targets`, `weights` (loss weight of each
target), `positions` and `segments` (packing: 0 marks padding).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cm3jax.data.pipeline import BATCH_KEYS
from cm3jax.sharding import batch_sharding, state_shardings
from cm3jax.train.optimizer import updates_done


def loss_and_metrics(params, graphdef, batch: dict, z_loss: float) -> tuple[jax.Array, dict]:
    model = nnx.merge(graphdef, params)
    logits_BTV = model(batch["inputs"], batch["positions"], batch["segments"])
    log_z_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    target_logit_BT = jnp.take_along_axis(logits_BTV, batch["targets"][..., None], axis=-1)[..., 0]
    weights = batch["weights"].astype(jnp.float32)
    total = jnp.maximum(weights.sum(), 1.0)
    nll = ((log_z_BT - target_logit_BT) * weights).sum() / total
    z = (jnp.square(log_z_BT) * weights).sum() / total
    loss = nll + z_loss * z
    # A hit: no logit beats the target's (argmax's answer from a max rather than an index reduction).
    correct = (target_logit_BT >= jax.lax.stop_gradient(jnp.max(logits_BTV, axis=-1))) * weights
    return loss, {"loss": loss, "nll": nll, "z_loss": z, "accuracy": correct.sum() / total, "tokens": weights.sum()}


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    z_loss: float = 0.0) -> Callable:
    """The step; its metrics include the learning rate of its update (`schedule` is tx's)."""
    def train_step(params, opt_state, batch):
        grad_fn = jax.value_and_grad(loss_and_metrics, has_aux=True)
        (_, metrics), grads = grad_fn(params, graphdef, batch, z_loss)
        metrics["learning_rate"] = schedule(updates_done(opt_state))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return params, opt_state, metrics
    return train_step


def jit_train_step(graphdef, tx, schedule, params, opt_state, mesh, z_loss: float = 0.0) -> Callable:
    """The train step jitted with explicit in/out shardings on `mesh`; params and optimizer
    state are donated."""
    param_shardings = state_shardings(params, mesh)
    opt_shardings = optimizer_shardings(tx, opt_state, param_shardings, mesh)
    data = {k: batch_sharding(mesh) for k in BATCH_KEYS}
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    return jax.jit(make_train_step(graphdef, tx, schedule, z_loss),
                   in_shardings=(param_shardings, opt_shardings, data),
                   out_shardings=(param_shardings, opt_shardings, replicated),
                   donate_argnums=(0, 1))


def optimizer_shardings(tx, opt_state, param_shardings, mesh):
    """Optimizer state mirrors the parameters' shardings; its other leaves (counts) are replicated."""
    replicated = jax.sharding.NamedSharding(mesh, jax.P())
    return optax.tree_map_params(tx, lambda _, sharding: sharding, opt_state, param_shardings,
                                 transform_non_params=lambda _: replicated)
