"""Which retrieved documents condition a query: CM3Leon's heuristics (docs/paper.md, Retrieval),
each switchable.

From the index's nearest candidates, in this order:
1. never the query's own document (same id), nor a held-out one (`exclude_rows`);
2. relevance: candidates ranked by their key's inner product with the query (CLIP score);
3. diversity: skip near copies of the query (relevance above `max_relevance`, 0.9 in the
   paper) and duplicates of a document already taken (identical token ids, or keys whose
   inner product reaches `duplicate_similarity`);
4. modality: text + image documents first, single-modality ones only to fill up.
At training time the query text first loses 20% of its words (query dropout), drawn from
a seeded generator, so the retriever cannot just return the caption it was given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Collection, Sequence

import numpy as np

from cm3jax.errors import UserError
from cm3jax.retrieval.bank import Embedder, MemoryBank
from cm3jax.retrieval.index import Index


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
    k: int = 2  # documents returned per query (at most)
    candidates: int = 32  # neighbours fetched from the index before the heuristics
    prefer_multimodal: bool = True  # text + image documents before single-modality ones
    max_relevance: float | None = 0.9  # skip candidates scoring above this (near copies); None: keep them
    skip_duplicates: bool = True  # skip documents equal to one already taken
    duplicate_similarity: float = 0.99  # keys at least this close count as the same document
    exclude_own: bool = True  # never return the query's own document
    # Shapes: skip documents whose scene means what the query's does (near copies in meaning, which
    # an evaluation prompt never has); an emblem's document is kept, as the knowledge the bank holds
    skip_same_meaning: bool = False
    # Shapes, training examples: documents holding the example's own objects exactly (shape, colour,
    # size, centre and background, so the same image codes at the same places), as few as cover the
    # most of them; the retriever's neighbours fill what is left
    share_objects: bool = False

    def check(self) -> "SelectionOptions":
        if self.k < 1 or self.candidates < self.k:
            raise UserError(f"Selection needs 1 <= k <= candidates, got k={self.k}, candidates={self.candidates}.")
        return self


@dataclasses.dataclass(frozen=True)
class QueryDropout:
    """Drops round(rate x words) of a query's words (never all of them) before it is embedded."""
    rate: float = 0.2

    def __post_init__(self):
        if not 0 <= self.rate < 1:
            raise UserError(f"Query dropout rate must lie in [0, 1), got {self.rate}.")

    def apply(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        drop = min(math.floor(self.rate * len(words) + 0.5), max(len(words) - 1, 0))
        if drop == 0:
            return text
        dropped = set(rng.choice(len(words), size=drop, replace=False).tolist())
        return " ".join(w for i, w in enumerate(words) if i not in dropped)


@dataclasses.dataclass(frozen=True)
class Hit:
    row: int  # the bank row
    score: float  # inner product of its key with the query's


def select(bank: MemoryBank, ids_K: np.ndarray, scores_K: np.ndarray, options: SelectionOptions = SelectionOptions(),
           own_id: str | None = None, exclude_rows: Collection[int] = ()) -> list[Hit]:
    """At most `options.k` of one query's candidates (ids -1 are absent ones), by the heuristics;
    rows in `exclude_rows` are never returned."""
    options.check()
    ids, scores = np.asarray(ids_K).reshape(-1), np.asarray(scores_K, np.float32).reshape(-1)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    eligible = []
    for i in order:
        row, score = int(ids[i]), float(scores[i])
        if row < 0 or row in exclude_rows:
            continue
        if options.exclude_own and own_id is not None and bank.ids[row] == own_id:
            continue
        if options.max_relevance is not None and score > options.max_relevance:
            continue
        eligible.append(Hit(row, score))
    if options.prefer_multimodal:  # stable: relevance order within each modality group
        eligible.sort(key=lambda hit: not bank.is_multimodal(hit.row))
    taken: list[Hit] = []
    for hit in eligible:
        if options.skip_duplicates and any(is_duplicate(bank, hit.row, t.row, options.duplicate_similarity)
                                           for t in taken):
            continue
        taken.append(hit)
        if len(taken) == options.k:
            break
    return taken


def is_duplicate(bank: MemoryBank, a: int, b: int, similarity: float) -> bool:
    """Same content (token ids) or near-identical keys."""
    if bank.content_digest(a) == bank.content_digest(b):
        return True
    return float(bank.keys_ND[a] @ bank.keys_ND[b]) >= similarity


def retrieve(bank: MemoryBank, index: Index, embedder: Embedder, texts: Sequence[str | None],
             images: Sequence[np.ndarray | None], options: SelectionOptions = SelectionOptions(), *,
             own_ids: Sequence[str | None] | None = None, exclude_rows: Collection[int] = (),
             exclude_rows_of: Sequence[Collection[int]] | None = None, training: bool = False,
             dropout: QueryDropout = QueryDropout(), rng: np.random.Generator | None = None) -> list[list[Hit]]:
    """Documents for each query (a text, an image or both), never rows in `exclude_rows` nor in
    the query's own `exclude_rows_of`. With `training`, query texts go through `dropout` drawn
    from `rng` (required then, so retrieval is reproducible)."""
    options.check()
    if len(texts) != len(images) or any(per is not None and len(per) != len(texts) for per in (own_ids, exclude_rows_of)):
        raise UserError(f"Give one text, image (None for absent), own id and excluded rows per query: got "
                        f"{len(texts)} texts, {len(images)} images, {len(own_ids) if own_ids is not None else 'no'} ids, "
                        f"{len(exclude_rows_of) if exclude_rows_of is not None else 'no'} exclusions.")
    if index.size != len(bank):
        raise UserError(f"The index holds {index.size} keys but the bank {len(bank)} documents; build the index "
                        f"from this bank.")
    if training:
        if rng is None:
            raise UserError("Query dropout at training time needs a seeded numpy Generator (rng).")
        texts = [None if t is None else dropout.apply(t, rng) for t in texts]
    if not texts:
        return []
    queries_QD = embedder.embed_documents(list(texts), list(images))
    ids_QK, scores_QK = index.search(queries_QD, options.candidates)
    own = own_ids if own_ids is not None else [None] * len(texts)
    excluded = frozenset(exclude_rows)
    return [select(bank, ids_QK[q], scores_QK[q], options, own[q],
                   excluded if exclude_rows_of is None else excluded | frozenset(exclude_rows_of[q]))
            for q in range(len(texts))]
