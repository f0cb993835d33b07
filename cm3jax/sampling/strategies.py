"""Picking the next token from per-stream logits: guidance, filters and the final draw.

All functions work on one sample's vectors ([V] or [S, V] over S guidance streams) and are
vmapped over samples by the sampler, so a sample's draw depends only on its own key.

Guidance combines log-probabilities (docs/paper.md, Decoding):
    2 streams (cond, uncond):               cond + (g - 1) (cond - uncond)
    3 streams (full, image-only, uncond):   full + (g_txt - 1)(full - image) + (g_img - 1)(image - uncond)
which equal `uncond + g (cond - uncond)` and Chameleon's instruct formula, but give exactly the
conditional scores when the scales are 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cm3jax.errors import UserError

STRATEGIES = ("greedy", "sample", "cd_k", "mix")


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """How tokens are drawn. `strategy`: greedy (argmax), sample (temperature, then top-k and
    top-p filters), cd_k (contrastive decoding, top-k variant; needs an unconditional stream), or
    mix (the paper's best: even sample ids draw with `sample`, odd ones with `cd_k`).
    CD-K's scores are drawn at `temperature` like logits (temperature 0: their argmax).
    Guidance: `cfg_scale` for 2 streams; `image_scale`, `text_scale` for 3 (instruct) streams."""
    strategy: str = "sample"
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    cd_alpha: float = 0.1
    cd_k: int = 8
    cfg_scale: float = 1.0
    image_scale: float = 1.0
    text_scale: float = 1.0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise UserError(f"Unknown sampling strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        if self.temperature < 0:
            raise UserError(f"Temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top-p must lie in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise UserError(f"top-k must be >= 0 (0 = off), got {self.top_k}.")
        if not 0.0 < self.cd_alpha <= 1.0 or self.cd_k < 1:
            raise UserError(f"CD-K needs 0 < alpha <= 1 and k >= 1, got alpha {self.cd_alpha}, k {self.cd_k}.")
        for name in ("cfg_scale", "image_scale", "text_scale"):
            if getattr(self, name) < 0:
                raise UserError(f"The guidance scale {name} must be >= 0 (1 = no guidance), got {getattr(self, name)}.")

    @property
    def contrastive(self) -> bool:
        return self.strategy in ("cd_k", "mix")

    def dynamic(self) -> dict[str, jax.Array]:
        """The float knobs, passed to jitted code as arrays so that changing them never recompiles."""
        return {n: jnp.float32(getattr(self, n)) for n in DYNAMIC}

    def static(self) -> "SamplingSettings":
        """These settings with the float knobs at their defaults: the part that shapes the program."""
        return dataclasses.replace(self, **{n: SamplingSettings.__dataclass_fields__[n].default for n in DYNAMIC})


DYNAMIC = ("temperature", "top_p", "cd_alpha", "cfg_scale", "image_scale", "text_scale")


def guide(logits_SV: jax.Array, knobs: dict[str, jax.Array]) -> jax.Array:
    """Guided log-probabilities [V] from S = 1, 2 or 3 streams."""
    logp = jax.nn.log_softmax(logits_SV.astype(jnp.float32), axis=-1)
    if logp.shape[0] == 1:
        return logp[0]
    if logp.shape[0] == 2:
        return logp[0] + (knobs["cfg_scale"] - 1.0) * (logp[0] - logp[1])
    full, image, uncond = logp
    return full + (knobs["text_scale"] - 1.0) * (full - image) + (knobs["image_scale"] - 1.0) * (image - uncond)


def top_k_filter(scores_V: jax.Array, k: int) -> jax.Array:
    """Scores below the k-th largest become -inf (ties at the k-th all stay)."""
    if k <= 0 or k >= scores_V.shape[-1]:
        return scores_V
    kth = jax.lax.top_k(scores_V, k)[0][-1]
    return jnp.where(scores_V >= kth, scores_V, -jnp.inf)


def top_p_filter(scores_V: jax.Array, p: jax.Array) -> jax.Array:
    """Nucleus filter: keep the most likely tokens whose probabilities first reach p (the token
    that crosses p included, and any tied with it); p = 1 keeps every token exactly.

    Instead of sorting the vocabulary (milliseconds per row on CPU), bisect for the probability
    threshold t: the largest t whose tokens with probability >= t still hold mass p."""
    def nucleus(scores_V):
        probs = jax.nn.softmax(scores_V)

        def halve(_, bounds):
            low, high = bounds
            middle = 0.5 * (low + high)
            enough = jnp.sum(jnp.where(probs >= middle, probs, 0.0)) >= p
            return jnp.where(enough, middle, low), jnp.where(enough, high, middle)

        low, _ = jax.lax.fori_loop(0, BISECTIONS, halve, (jnp.float32(0.0), jnp.max(probs) * (1 + 1e-6)))
        return jnp.where(probs >= low, scores_V, -jnp.inf)

    return jax.lax.cond(p >= 1.0, lambda s: s, nucleus, scores_V)


BISECTIONS = 40  # resolves probability gaps down to max(p) / 2**40


def cd_k_scores(logp_cond_V: jax.Array, logp_uncond_V: jax.Array, alpha: jax.Array, k: int) -> jax.Array:
    """CD-K (docs/paper.md): log p_cond(t) - log p_uncond(t) for t with p_cond(t) >= alpha times the
    k-th largest p_cond, else -inf. Inputs are log-probabilities with disallowed tokens at -inf."""
    kth = jax.lax.top_k(logp_cond_V, k)[0][-1]
    plausible = logp_cond_V >= jnp.log(alpha) + kth
    return jnp.where(plausible & jnp.isfinite(logp_cond_V), logp_cond_V - logp_uncond_V, -jnp.inf)


def draw(scores_V: jax.Array, key: jax.Array, temperature: jax.Array, top_k: int = 0,
         top_p: jax.Array | float = 1.0) -> jax.Array:
    """A token from softmax(scores / temperature) after the top-k and top-p filters, or the
    argmax at temperature 0."""
    scaled = scores_V / jnp.maximum(temperature, 1e-6)
    sampled = categorical(key, top_p_filter(top_k_filter(scaled, top_k), top_p))
    return jnp.where(temperature > 0, sampled, jnp.argmax(scores_V)).astype(jnp.int32)


def categorical(key: jax.Array, logits_V: jax.Array) -> jax.Array:
    """A draw from softmax(logits) by inverting its CDF at one uniform number: one random number
    per draw instead of jax.random.categorical's one per vocabulary entry, which dominates a
    decoding step on CPU."""
    cdf = jnp.cumsum(jnp.exp(logits_V - jnp.max(logits_V)))
    u = jax.random.uniform(key, dtype=cdf.dtype) * cdf[-1]
    # argmax(cdf): the last token with mass, should rounding put u at the very top
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), jnp.argmax(cdf))


def choose(logits_SV: jax.Array, allowed_V: jax.Array, key: jax.Array, contrastive_row: jax.Array,
           settings: SamplingSettings, knobs: dict[str, jax.Array]) -> jax.Array:
    """One sample's next token from its S streams' logits, among the `allowed_V` tokens."""
    guided = jnp.where(allowed_V, guide(logits_SV, knobs), -jnp.inf)
    if settings.strategy == "greedy":
        return jnp.argmax(guided).astype(jnp.int32)
    token = draw(guided, key, knobs["temperature"], settings.top_k, knobs["top_p"])
    if settings.contrastive:
        logp = jax.nn.log_softmax(jnp.where(allowed_V, logits_SV.astype(jnp.float32), -jnp.inf), axis=-1)
        contrast = draw(cd_k_scores(logp[0], logp[-1], knobs["cd_alpha"], settings.cd_k), key, knobs["temperature"])
        token = jnp.where(contrastive_row, contrast, token)
    return token
