"""The cached sampler: prefill once, then one `lax.while_loop` over a preallocated KV cache.

A request is one sample: its prompt in each guidance stream (1: conditional only; 2: cond,
uncond; 3: full, image-only, uncond). All streams of all samples are rows of one batch; each row
keeps its own position, so prompts of any lengths share the batch; every stream of a sample is
fed the token drawn for that sample. Prompts are padded to power-of-two buckets, so a new prompt
length rarely compiles again. A sample's draws depend only on the seed, its sample id and the
step: a batch gives the same samples as its requests one by one.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.sampling.modality import CLOSING, advance, allowed_table, state_after
from cm3jax.sampling.strategies import SamplingSettings, choose
from cm3jax.vocab import MultimodalVocab

MIN_BUCKET = 16
UNTIL = ("eos", "image", "span")


@dataclasses.dataclass(frozen=True)
class Generation:
    tokens: np.ndarray  # int32 [N, max_new], <pad> after a sample's end
    lengths: np.ndarray  # int32 [N], tokens produced (the closing <eos> included)
    finished: np.ndarray  # bool [N]: ended (see `until`) rather than cut at max_new

    def sample(self, i: int) -> np.ndarray:
        return self.tokens[i, :self.lengths[i]]


def bucket(length: int, limit: int) -> int:
    """The padded prompt width: the next power of two (at least MIN_BUCKET), capped at `limit`."""
    return min(max(MIN_BUCKET, 1 << (max(length, 1) - 1).bit_length()), limit)


def generate(model: nnx.Module, vocab: MultimodalVocab, requests: list[tuple[np.ndarray, ...]],
             settings: SamplingSettings, max_new: int, seed: int = 0, until: str = "eos",
             sample_ids: list[int] | None = None) -> Generation:
    """Samples continuations of `requests` (each a tuple of one prompt per guidance stream).
    A sample ends at `<eos>`, and with `until` "image" as soon as it completes an image, with
    "span" at the `<eoss>` closing an infilled span."""
    if until not in UNTIL:
        raise UserError(f"until must be one of {', '.join(UNTIL)}, not {until!r}.")
    if not requests:
        raise UserError("No prompts given.")
    streams = len(requests[0])
    if streams not in (1, 2, 3) or any(len(r) != streams for r in requests):
        raise UserError(f"Every request needs the same number of guidance streams (1, 2 or 3); got "
                        f"{sorted({len(r) for r in requests})}.")
    if settings.contrastive and streams == 1:
        raise UserError(f"The {settings.strategy} strategy contrasts with an unconditional stream; give "
                        f"each request a conditional and an unconditional prompt (CFG).")
    rows = [np.asarray(p, np.int32).reshape(-1) for r in requests for p in r]
    if min(len(p) for p in rows) == 0:
        raise UserError("A prompt is empty; begin it with at least one token.")
    context = model.config.max_seq_len
    longest = max(len(p) for p in rows)
    if longest + max_new > context:
        raise UserError(f"A prompt of {longest} tokens plus {max_new} new tokens exceeds the model's context of "
                        f"{context}; prompts may be at most {context - max_new} tokens long here.")
    width = bucket(longest, context - max_new)
    prompt_RP = np.full((len(rows), width), vocab.pad_id, np.int32)
    for i, p in enumerate(rows):
        prompt_RP[i, :len(p)] = p
    lengths_R = np.array([len(p) for p in rows], np.int32)
    start = [state_after(r[0], vocab) for r in requests]
    ids = np.arange(len(requests)) if sample_ids is None else np.asarray(sample_ids)
    if len(ids) != len(requests):
        raise UserError(f"{len(ids)} sample ids for {len(requests)} requests.")

    graphdef, state = nnx.split(model)
    logits_RV, cache = _prefill(graphdef, state, jnp.asarray(prompt_RP), jnp.asarray(lengths_R), width + max_new)
    out = _decode(graphdef, state, cache, logits_RV, jnp.asarray(lengths_R),
                  jnp.asarray([s for s, _ in start], jnp.int32), jnp.asarray([c for _, c in start], jnp.int32),
                  jnp.asarray(ids, jnp.int32), jax.random.key(seed), settings.dynamic(),
                  settings=settings.static(), vocab=vocab, streams=streams, max_new=max_new, until=until)
    tokens, lengths, finished = (np.asarray(x) for x in out[:3])
    return Generation(tokens, lengths, finished)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _prefill(graphdef, state, prompt_RP, lengths_R, slots: int):
    model = nnx.merge(graphdef, state)
    rows, width = prompt_RP.shape
    positions = jnp.broadcast_to(jnp.arange(width), (rows, width))
    hidden_RPD, cache = model.cached(prompt_RP, positions, model.init_cache(rows, slots))
    last_R1D = hidden_RPD[jnp.arange(rows), lengths_R - 1][:, None]
    return model.logits(last_R1D)[:, 0], cache


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("settings", "vocab", "streams", "max_new",
                                                                   "until"), donate_argnums=(2,))
def _decode(graphdef, state, cache, logits_RV, positions_R, mode_N, count_N, sample_ids_N, key, knobs, *,
            settings: SamplingSettings, vocab: MultimodalVocab, streams: int, max_new: int, until: str):
    model = nnx.merge(graphdef, state)
    n = mode_N.shape[0]
    table = jnp.asarray(allowed_table(vocab, logits_RV.shape[-1]))
    contrastive_N = (sample_ids_N % 2 == 1) if settings.strategy == "mix" else jnp.ones((n,), bool)
    pick = jax.vmap(lambda lg, al, k, c: choose(lg, al, k, c, settings, knobs))

    def body(carry):
        t, cache, logits_RV, positions_R, mode_N, count_N, done_N, out_NM = carry
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, i), t))(sample_ids_N)
        token_N = pick(logits_RV.reshape(n, streams, -1), table[mode_N], keys, contrastive_N)
        token_N = jnp.where(done_N, vocab.pad_id, token_N)
        out_NM = out_NM.at[:, t].set(token_N)
        mode_N, count_N = advance(mode_N, count_N, token_N, vocab, xp=jnp)
        ended = token_N == vocab.eos_id
        if until == "image":
            ended |= mode_N == CLOSING
        elif until == "span":
            ended |= token_N == vocab.eoss_id
        done_N = done_N | ended
        hidden, cache = model.cached(jnp.repeat(token_N, streams)[:, None], positions_R[:, None], cache,
                                     jnp.repeat(jnp.where(count_N > 0, count_N - 1, -1), streams)[:, None])
        return t + 1, cache, model.logits(hidden)[:, 0], positions_R + 1, mode_N, count_N, done_N, out_NM

    def cond(carry):
        t, done_N = carry[0], carry[6]
        return (t < max_new) & ~jnp.all(done_N)

    start = (jnp.int32(0), cache, logits_RV, positions_R, mode_N, count_N, jnp.zeros((n,), bool),
             jnp.full((n, max_new), vocab.pad_id, jnp.int32))
    _, cache, _, _, _, _, done_N, out_NM = jax.lax.while_loop(cond, body, start)
    lengths_N = jnp.sum(out_NM != vocab.pad_id, axis=1).astype(jnp.int32)
    return out_NM, lengths_N, done_N, cache  # the cache goes back so that its donated buffers are reused
