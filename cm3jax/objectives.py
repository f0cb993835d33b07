"""The CM3 causal-masked objective (CM3, CM3Leon; metaseq's sentinel layout).

A document's spans are cut out, each replaced by `<sentinel:i>`, and moved after an
`<infill>` marker as `<sentinel:i> span <eoss>`:

    a b <s:0> e f <s:1> <break> ... <infill> <s:0> c d <eoss> <s:1> g <eoss> <eos>

n ~ clamp(Poisson(1), 1, 16) spans, non-overlapping, never crossing (or containing) a
`<break>`, so a span is all text or all image codes. Training is plain next-token loss
over the whole sequence, except that predicting a sentinel carries no loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cm3jax.errors import UserError
from cm3jax.vocab import MAX_SENTINELS, MultimodalVocab


@dataclasses.dataclass(frozen=True)
class Masked:
    tokens: np.ndarray  # int32 [L]
    loss_weights: np.ndarray  # float32 [L]: weight of predicting tokens[i] (from tokens[:i])
    spans: tuple[tuple[int, int], ...]  # [start, end) in the original document, in order


def number_of_spans(rng: np.random.Generator, rate: float = 1.0) -> int:
    return int(np.clip(rng.poisson(rate), 1, MAX_SENTINELS))


def _regions(tokens: np.ndarray, vocab: MultimodalVocab) -> list[tuple[int, int]]:
    """Maximal runs of maskable tokens (text or image codes; not specials such as <break>)."""
    maskable = vocab.is_text(tokens) | vocab.is_image(tokens)
    regions, start = [], None
    for i, ok in enumerate(maskable.tolist() + [False]):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            regions.append((start, i))
            start = None
    return regions


def sample_spans(tokens: np.ndarray, vocab: MultimodalVocab, rng: np.random.Generator, n: int,
                 attempts: int = 20) -> list[tuple[int, int]]:
    """Up to n non-overlapping spans, each inside one region, boundaries uniform within it."""
    regions = _regions(tokens, vocab)
    if not regions:
        return []
    lengths = np.array([e - s for s, e in regions], np.float64)
    spans: list[tuple[int, int]] = []
    taken = np.zeros(len(tokens), bool)
    for _ in range(n):
        for _ in range(attempts):
            s, e = regions[rng.choice(len(regions), p=lengths / lengths.sum())]
            a, b = sorted(rng.integers(s, e + 1, size=2).tolist())
            if b == a:
                b = a + 1 if a < e else a
                a = b - 1
            if not taken[a:b].any():
                taken[a:b] = True
                spans.append((a, b))
                break
    return sorted(spans)


def cm3_mask(tokens, vocab: MultimodalVocab, spans) -> Masked:
    """The causal-masked form of `tokens` (a document without its final <eos>) for `spans`."""
    tokens = np.asarray(tokens, np.int32)
    spans = tuple(sorted((int(a), int(b)) for a, b in spans))
    if len(spans) > MAX_SENTINELS:
        raise UserError(f"{len(spans)} spans; the vocabulary has {MAX_SENTINELS} sentinels.")
    prefix, moved, cursor = [], [np.array([vocab.infill_id], np.int32)], 0
    for i, (a, b) in enumerate(spans):
        if not (cursor <= a < b <= len(tokens)):
            raise UserError(f"Spans {spans} overlap, are empty or leave the document of length {len(tokens)}.")
        if vocab.is_special(tokens[a:b]).any():
            raise UserError(f"Span {(a, b)} contains a special token (e.g. <break>); spans stay inside one modality.")
        sentinel = np.array([vocab.sentinel_id(i)], np.int32)
        prefix += [tokens[cursor:a], sentinel]
        moved += [sentinel, tokens[a:b], np.array([vocab.eoss_id], np.int32)]
        cursor = b
    prefix.append(tokens[cursor:])
    parts = prefix + (moved if spans else []) + [np.array([vocab.eos_id], np.int32)]
    out = np.concatenate(parts).astype(np.int32)
    weights = np.where(is_sentinel(out, vocab), 0.0, 1.0).astype(np.float32)
    return Masked(out, weights, spans)


def is_sentinel(tokens: np.ndarray, vocab: MultimodalVocab) -> np.ndarray:
    first = vocab.sentinel_id(0)
    return (tokens >= first) & (tokens < first + MAX_SENTINELS)


def causal(tokens, vocab: MultimodalVocab) -> Masked:
    """The plain language-model form: the document and <eos>."""
    return cm3_mask(tokens, vocab, ())


def random_cm3(tokens, vocab: MultimodalVocab, rng: np.random.Generator, rate: float = 1.0) -> Masked:
    tokens = np.asarray(tokens, np.int32)
    return cm3_mask(tokens, vocab, sample_spans(tokens, vocab, rng, number_of_spans(rng, rate)))


def most_frequent_code(document, vocab: MultimodalVocab) -> int | None:
    """The image id a document's image tokens hold most often (a Shapes image's plain background
    patch); None for a document without image tokens."""
    document = np.asarray(document)
    image = document[vocab.is_image(document)]
    if not len(image):
        return None
    ids, counts = np.unique(image, return_counts=True)
    return int(ids[np.argmax(counts)])


def weight_drawn_codes(masked: Masked, backgrounds, vocab: MultimodalVocab, weight: float) -> np.ndarray:
    """`masked`'s loss weights with every image code that is not one of `backgrounds` (each
    document's `most_frequent_code`) weighted `weight` times: the codes that draw something,
    a tenth of the tokens and all of the difficulty of drawing."""
    tokens = masked.tokens
    drawn = vocab.is_image(tokens) & ~np.isin(tokens, np.asarray(list(backgrounds), np.int64))
    return np.where(drawn, masked.loss_weights * weight, masked.loss_weights).astype(np.float32)


def unmask(masked_tokens, vocab: MultimodalVocab) -> np.ndarray:
    """The original document (without <eos>) from its causal-masked form."""
    tokens = np.asarray(masked_tokens, np.int32)
    if len(tokens) and tokens[-1] == vocab.eos_id:
        tokens = tokens[:-1]
    where = np.nonzero(tokens == vocab.infill_id)[0]
    if not where.size:
        return tokens
    prefix, tail = tokens[:where[0]], tokens[where[0] + 1:]
    spans, i = {}, 0
    while i < len(tail):
        sentinel = int(tail[i])
        end = i + 1 + int(np.argmax(tail[i + 1:] == vocab.eoss_id))
        if tail[end] != vocab.eoss_id:
            raise UserError("A moved span has no <eoss> terminator.")
        spans[sentinel] = tail[i + 1:end]
        i = end + 1
    pieces = [spans[int(t)] if int(t) in spans else np.array([t], np.int32) for t in prefix]
    return np.concatenate(pieces).astype(np.int32) if pieces else prefix


def infill_prompt(tokens, vocab: MultimodalVocab, span: tuple[int, int]) -> np.ndarray:
    """What the model sees before it writes a span: the masked document, <infill>, and the
    span's sentinel (captioning is `<sentinel:0> <break> image <infill> <sentinel:0>`)."""
    masked = cm3_mask(tokens, vocab, [span]).tokens
    cut = int(np.nonzero(masked == vocab.infill_id)[0][0])
    return np.concatenate([masked[:cut + 1], [vocab.sentinel_id(0)]]).astype(np.int32)
