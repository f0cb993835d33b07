"""The compiled pieces of tokenizer training: state initialisation and the pure train step.

State layout (a plain pytree, checkpointed as is):
    state     = {"params": VQGAN params (pure dict), "step": int32, "code_age": int32[K],
                 "codebook_ema": {"count": f32[K], "sum": f32[K, D]} (only with EMA codebook updates),
                 "discriminator": critic params (only with a discriminator)}
    opt_state = {"params": optax state, "discriminator": optax state (only with one)}

`train_programs(config)` builds them once per recipe and process, so a second run of the same
recipe (a resume, a test) reuses the compiled step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from cm3jax.config import from_json_dict, to_json_dict
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.codebook import (batch_usage_and_perplexity, code_histogram, ema_entries, ema_update,
                                             restart_dead_codes)
from cm3jax.image_tokenizer.preprocess import to_unit_range
from cm3jax.image_tokenizer.losses import (PatchDiscriminator, discriminator_hinge_loss,
                                           generator_adversarial_loss, reconstruction_loss)
from cm3jax.image_tokenizer.model import VQGAN
from cm3jax.image_tokenizer.recipe import vqgan_config

DISCRIMINATOR_SEED_OFFSET = 1
CODEBOOK_METHODS = ("gradient", "ema")  # how entries learn: by their loss term, or as EMAs
# XLA:CPU compiles threefry bit generation slowly (seconds per tensor shape); the RBG generator
# keeps initialisation and the step's random draws cheap to compile, and is as deterministic.
KEY_IMPL = "unsafe_rbg"


def make_key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl=KEY_IMPL)


def make_optimizer(training: ml_collections.ConfigDict,
                   learning_rate: float | None = None) -> tuple[optax.GradientTransformation, Callable]:
    """(clipped AdamW, its schedule): linear warmup, then cosine decay over `training.steps`."""
    peak = training.learning_rate if learning_rate is None else learning_rate
    if not 0 <= training.warmup_steps < training.steps:
        raise UserError(f"config.training.warmup_steps={training.warmup_steps} must lie in [0, "
                        f"training.steps={training.steps}).")
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=training.warmup_steps,
        decay_steps=training.steps, end_value=peak * training.final_learning_rate_fraction)
    tx = optax.chain(optax.clip_by_global_norm(training.grad_clip_norm),
                     optax.adamw(schedule, b1=training.adam_b1, b2=training.adam_b2,
                                 weight_decay=training.weight_decay))
    return tx, schedule


def make_discriminator(config: ml_collections.ConfigDict) -> PatchDiscriminator:
    d = config.training.discriminator
    return PatchDiscriminator(config.model.in_channels, d.base_channels, d.num_layers,
                              rngs=nnx.Rngs(make_key(config.training.seed + DISCRIMINATOR_SEED_OFFSET)))


def check_codebook_method(training: ml_collections.ConfigDict) -> str:
    method = training.codebook.method
    if method not in CODEBOOK_METHODS:
        raise UserError(f"config.training.codebook.method={method!r}; choose one of {', '.join(CODEBOOK_METHODS)}.")
    return method


def make_train_step(graphdef, config: ml_collections.ConfigDict, tx: optax.GradientTransformation,
                    schedule: Callable, critic_graphdef=None, critic_tx: optax.GradientTransformation | None = None,
                    adversarial: bool = False) -> Callable:
    """The pure step (state, opt_state, images uint8[B,H,W,3], rng) -> (state, opt_state, metrics),
    jitted. `adversarial` adds the GAN terms (the loop turns it on at the critic's start step)."""
    t = config.training
    codebook_size = config.model.codebook_size
    ema = check_codebook_method(t) == "ema"

    def generator_loss(params, critic_params, x_BHWC):
        model = nnx.merge(graphdef, params)
        z_BhwD = model.quant_conv(model.encoder(x_BHWC))
        z_q_BhwD, codes_Bhw, quantization = model.quantize(z_BhwD)
        reconstruction_BHWC = model.decode(z_q_BhwD)
        reconstruction, metrics = reconstruction_loss(reconstruction_BHWC, x_BHWC, t.l1_weight, t.l2_weight,
                                                      t.margin_weight, t.margin)
        metrics["quantization"] = quantization
        if ema:  # the entries follow their vectors by EMA; only the encoder's commitment is a loss
            metrics["commitment"] = jnp.mean((jax.lax.stop_gradient(z_q_BhwD) - z_BhwD) ** 2)
            loss = reconstruction + t.quantization_weight * config.model.beta * metrics["commitment"]
        else:
            loss = reconstruction + t.quantization_weight * quantization
        if adversarial:
            critic = nnx.merge(critic_graphdef, critic_params)
            metrics["generator_adversarial"] = generator_adversarial_loss(critic(reconstruction_BHWC))
            loss = loss + t.discriminator.weight * metrics["generator_adversarial"]
        metrics["loss"] = loss
        return loss, (metrics, codes_Bhw, z_BhwD, reconstruction_BHWC)

    def critic_loss(critic_params, real_BHWC, fake_BHWC):
        critic = nnx.merge(critic_graphdef, critic_params)
        return discriminator_hinge_loss(critic(real_BHWC), critic(fake_BHWC))

    def update_codebook(state: dict, params: dict, counts_K, codes_Bhw, z_BhwD, rng) -> tuple[dict, dict, dict]:
        """EMA update and dead-code restarts of the entries; returns (params, state, metrics)."""
        old_embedding_KD = state["params"]["quantize"]["embedding"]
        embedding_KD = params["quantize"]["embedding"]
        z_ND = jax.lax.stop_gradient(z_BhwD.reshape(-1, z_BhwD.shape[-1]))
        codes_N = codes_Bhw.ravel()
        updates, metrics = {}, {}
        if ema:
            count_K, sum_KD = ema_update(state["codebook_ema"]["count"], state["codebook_ema"]["sum"], codes_N, z_ND,
                                         t.codebook.ema_decay)
            embedding_KD = ema_entries(count_K, sum_KD, old_embedding_KD)
        if t.dead_code.enabled:
            error_N = jnp.sum((z_ND - old_embedding_KD[codes_N]) ** 2, axis=-1)
            embedding_KD, updates["code_age"], restarted_K = restart_dead_codes(
                embedding_KD, state["code_age"], counts_K, z_ND, error_N, rng, t.dead_code.restart_after_steps)
            metrics["restarted_codes"] = jnp.sum(restarted_K)
            if ema:  # a restarted entry counts as one vector
                weight = 1 - t.codebook.ema_decay
                count_K = jnp.where(restarted_K, weight, count_K)
                sum_KD = jnp.where(restarted_K[:, None], weight * embedding_KD, sum_KD)
        if ema:
            updates["codebook_ema"] = {"count": count_K, "sum": sum_KD}
        params = {**params, "quantize": {**params["quantize"], "embedding": embedding_KD}}
        return params, updates, metrics

    def step(state: dict, opt_state: dict, images_BHW3: jax.Array, rng: jax.Array):
        x_BHWC = to_unit_range(images_BHW3)
        grad_fn = jax.value_and_grad(generator_loss, has_aux=True)
        (_, (metrics, codes_Bhw, z_BhwD, reconstruction_BHWC)), grads = grad_fn(
            state["params"], state.get("discriminator"), x_BHWC)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["learning_rate"] = schedule(state["step"])
        updates, model_opt = tx.update(grads, opt_state["params"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        counts_K = code_histogram(codes_Bhw, codebook_size)
        metrics["code_usage"], metrics["perplexity"] = batch_usage_and_perplexity(counts_K)
        params, codebook_state, codebook_metrics = update_codebook(state, params, counts_K, codes_Bhw, z_BhwD, rng)
        metrics.update(codebook_metrics)
        new_state = {**state, **codebook_state, "params": params, "step": state["step"] + 1}
        new_opt_state = {**opt_state, "params": model_opt}
        if adversarial:
            fake_BHWC = jax.lax.stop_gradient(reconstruction_BHWC)
            metrics["discriminator"], critic_grads = jax.value_and_grad(critic_loss)(
                state["discriminator"], x_BHWC, fake_BHWC)
            critic_updates, new_opt_state["discriminator"] = critic_tx.update(
                critic_grads, opt_state["discriminator"], state["discriminator"])
            new_state["discriminator"] = optax.apply_updates(state["discriminator"], critic_updates)
        return new_state, new_opt_state, metrics

    return jax.jit(step, donate_argnums=(0, 1))


@dataclasses.dataclass(frozen=True)
class TrainPrograms:
    """Everything compiled for one recipe. `steps[adversarial]` is the train step."""
    graphdef: nnx.GraphDef
    critic_graphdef: nnx.GraphDef | None
    init: Callable[[], tuple[dict, dict]]
    steps: dict[bool, Callable]
    adversarial_start_step: int | None

    def step_at(self, step: int) -> Callable:
        """The step that turns `step` done steps into step + 1."""
        return self.steps[self.adversarial_start_step is not None and step >= self.adversarial_start_step]


def train_programs(config: ml_collections.ConfigDict) -> TrainPrograms:
    return _train_programs(json.dumps(to_json_dict(config), sort_keys=True))


@functools.lru_cache(maxsize=4)
def _train_programs(recipe_json: str) -> TrainPrograms:
    config = from_json_dict(json.loads(recipe_json))
    t = config.training
    use_critic = bool(t.discriminator.enabled)

    def build() -> tuple[VQGAN, PatchDiscriminator | None]:
        critic = make_discriminator(config) if use_critic else None
        return VQGAN(vqgan_config(config), nnx.Rngs(make_key(t.seed))), critic

    tx, schedule = make_optimizer(t)
    critic_tx = make_optimizer(t, t.discriminator.learning_rate)[0] if use_critic else None

    def init() -> tuple[dict, dict]:
        """(state, opt_state) in one compiled call (op by op, XLA:CPU would compile dozens)."""
        model, critic = build()
        # Codes start as never used: with the dead-code cure on, the first batches seed the codebook.
        never_used = t.dead_code.restart_after_steps if t.dead_code.enabled else 0
        state = {"params": nnx.to_pure_dict(nnx.state(model)), "step": jnp.zeros((), jnp.int32),
                 "code_age": jnp.full(config.model.codebook_size, never_used, jnp.int32)}
        if check_codebook_method(t) == "ema":
            weight = jnp.full(config.model.codebook_size, 1 - t.codebook.ema_decay, jnp.float32)
            entries = state["params"]["quantize"]["embedding"]
            state["codebook_ema"] = {"count": weight, "sum": weight[:, None] * entries}
        opt_state = {"params": tx.init(state["params"])}
        if critic is not None:
            state["discriminator"] = nnx.to_pure_dict(nnx.state(critic))
            opt_state["discriminator"] = critic_tx.init(state["discriminator"])
        return state, opt_state

    abstract_model, abstract_critic = nnx.eval_shape(build)
    graphdef = nnx.graphdef(abstract_model)
    critic_graphdef = nnx.graphdef(abstract_critic) if abstract_critic is not None else None
    steps = {adversarial: make_train_step(graphdef, config, tx, schedule, critic_graphdef, critic_tx, adversarial)
             for adversarial in ((False, True) if use_critic else (False,))}
    return TrainPrograms(graphdef, critic_graphdef, jax.jit(init), steps,
                         t.discriminator.start_step if use_critic else None)
