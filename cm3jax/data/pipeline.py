"""Documents -> CM3 objective -> packed rows -> batches, as a grain pipeline.

Each process reads its own shard of the examples; `global_batch` assembles the processes'
rows into one array sharded over ('data', 'fsdp'). The iterator's state (a small dict) is
saved with every checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import grain.python as grain
import jax
import numpy as np
from grain import experimental as grain_experimental

from cm3jax.documents import DocumentCodec
from cm3jax.errors import UserError
from cm3jax.objectives import causal, most_frequent_code, random_cm3, weight_drawn_codes
from cm3jax.sharding import batch_sharding

FIELDS = ("inputs", "targets", "weights")
# A batch: [B, T] arrays of next-token inputs, targets, loss weights, and packing positions and
# segments (0 marks padding).
BATCH_KEYS = FIELDS + ("positions", "segments")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    cm3_rate: float = 1.0  # share of documents masked with CM3; the rest are plain causal
    span_rate: float = 1.0  # Poisson rate of the number of spans
    drawn_code_weight: float = 1.0  # loss weight of image codes other than their document's most frequent one

    def __post_init__(self):
        if not self.drawn_code_weight > 0:
            raise UserError(f"data.drawn_code_weight is a loss weight and must be positive (1: every token alike); "
                            f"got {self.drawn_code_weight}.")


def to_training_example(document, codec: DocumentCodec, objective: ObjectiveConfig, seq_len: int,
                        rng: np.random.Generator, context: Sequence[np.ndarray] = ()) -> dict[str, np.ndarray]:
    """One document as next-token inputs/targets/weights, after the retrieved documents in
    `context` (`doc <eos> doc <eos> query`, docs/paper.md). The objective masks the whole sequence;
    when it does not fit in seq_len, retrieved documents go first (the last, least relevant, one
    first), then the CM3 spans' sentinels (the document trains causally); a query that alone does
    not fit is an error."""
    query = codec.encode(document)
    cm3 = rng.random() < objective.cm3_rate
    span_seed = int(rng.integers(2 ** 31))
    context = list(context)
    while True:
        ids = np.concatenate([*(np.append(c, codec.vocab.eos_id) for c in context), query]).astype(np.int32)
        span_rng = np.random.default_rng(span_seed)
        masked = random_cm3(ids, codec.vocab, span_rng, objective.span_rate) if cm3 else causal(ids, codec.vocab)
        if len(masked.tokens) <= seq_len + 1:
            break
        if context:
            context.pop()
        elif cm3:  # the sentinels of this many spans leave no room: this one trains causally
            cm3 = False
        else:
            raise UserError(f"A training document takes {len(masked.tokens) - 1} tokens, "
                            f"{len(masked.tokens) - 1 - seq_len} more than train.seq_len = {seq_len}; raise "
                            f"train.seq_len or shorten the documents.")
    weights = masked.loss_weights
    if objective.drawn_code_weight != 1.0:
        backgrounds = {most_frequent_code(d, codec.vocab) for d in (*context, query)} - {None}
        weights = weight_drawn_codes(masked, backgrounds, codec.vocab, objective.drawn_code_weight)
    tokens = masked.tokens
    return {"inputs": tokens[:-1], "targets": tokens[1:], "weights": weights[1:].astype(np.float32)}


def _rename(packed: dict) -> dict[str, np.ndarray]:
    return {"inputs": packed["inputs"].astype(np.int32), "targets": packed["targets"].astype(np.int32),
            "weights": packed["weights"].astype(np.float32),
            "positions": packed["inputs_positions"].astype(np.int32),
            "segments": packed["inputs_segment_ids"].astype(np.int32)}


def document_rows(to_document: Callable, codec: DocumentCodec, objective: ObjectiveConfig, seq_len: int,
                  to_context: Callable | None = None) -> Callable:
    """`(example, rng) -> row` of pretraining: `to_document(example, rng) -> segments` builds a
    document from a source example, `to_context(example, rng) -> [ids]` (optional) the retrieved
    documents to put before it, and the objective masks them."""
    def to_row(example, rng):
        context = to_context(example, rng) if to_context is not None else ()
        return to_training_example(to_document(example, rng), codec, objective, seq_len, rng, context)
    return to_row


def make_pipeline(examples: grain.MapDataset, to_row: Callable, seq_len: int, local_batch: int, seed: int,
                  process_index: int = 0, process_count: int = 1, packing_bins: int | None = None,
                  repeat: bool = True) -> grain.IterDataset:
    """`to_row(example, rng) -> {inputs, targets, weights}` makes a row of at most `seq_len` tokens
    (`document_rows` for pretraining, `cm3jax.data.sft.TaskMixture` for instruction tuning)."""
    shard = examples[process_index::process_count]
    shard = shard.shuffle(seed=seed)
    if repeat:
        shard = shard.repeat()

    rows = shard.random_map(to_row, seed=seed).to_iter_dataset()
    lengths = {k: seq_len for k in FIELDS}
    packed = grain_experimental.FirstFitPackIterDataset(
        rows, length_struct=lengths, num_packing_bins=packing_bins or local_batch, seed=seed)
    return packed.map(_rename).batch(local_batch, drop_remainder=True)


def global_batch(local: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """One global array per key from every process's local rows."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, local[k]) for k in BATCH_KEYS}
