"""Offline neighbours: for every training example, memory-bank documents retrieved by its text
and by its image (docs/paper.md: two each), stored next to the examples as bank rows.

    DIR/cm3jax_neighbours.json    the bank it indexes (path, size, fingerprint) and each split's settings
    DIR/<split>.npy               int32 [N, 2k]: k rows by text, then k by image; -1 = none

On Shapes (`shapes_neighbours`) the `train` split's text queries lose 20% of their words and
never see the unseen emblems' documents (so those emblems stay out of every training
sequence); other splits are queried as they are, as at inference. With the selection's
`skip_same_meaning`, no example is given a document of a scene that means what its own does
(the near copies a 20,000-document bank holds for a third of the training scenes and never for
an evaluation prompt), but for emblems' documents. With `share_objects`, a training example's
documents are instead the bank scenes that hold its own objects exactly (`shared_object_rows`), the
retriever's neighbours filling what they leave (none of either meaning what the example does): the
same codes at the same places of the image, so copying them is right.

At training time `sample_context` draws up to three of an example's neighbours and hands their
token ids to the data pipeline, which lays them out before the example (`doc <eos> doc <eos> query`).
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Collection, Sequence

import numpy as np
from tqdm import tqdm

from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_bytes
from cm3jax.manifest import ManifestSpec
from cm3jax.retrieval.bank import Embedder, MemoryBank
from cm3jax.retrieval.index import Index
from cm3jax.retrieval.select import QueryDropout, SelectionOptions, retrieve
from cm3jax.shapes.captions import meaning
from cm3jax.shapes.dataset import data_source, scene_of
from cm3jax.shapes.scene import Scene
from cm3jax.shapes.emblems import NUM_EMBLEMS, UNSEEN_EMBLEMS

MANIFEST = ManifestSpec("cm3jax_neighbours.json", "neighbours", "`cm3jax retrieval neighbours --out {directory}`",
                        keys=("bank.path", "bank.size", "bank.fingerprint", "splits"))


def compute_neighbours(bank: MemoryBank, index: Index, embedder: Embedder, texts: Sequence[str],
                       images: np.ndarray, own_ids: Sequence[str], options: SelectionOptions = SelectionOptions(),
                       dropout: QueryDropout = QueryDropout(), seed: int = 0, exclude_rows: Collection[int] = (),
                       exclude_rows_of: Sequence[Collection[int]] | None = None, batch_size: int = 512,
                       progress: bool = True) -> np.ndarray:
    """int32 [N, 2k]: each example's documents by text (its caption after query dropout) and by
    image, chosen by the selection heuristics, never rows in `exclude_rows` nor in the example's
    own `exclude_rows_of`; -1 where fewer qualified."""
    n, k = len(texts), options.k
    if len(images) != n or len(own_ids) != n or (exclude_rows_of is not None and len(exclude_rows_of) != n):
        raise UserError(f"Give one text, image, id and excluded rows per example: got {n} texts, {len(images)} "
                        f"images, {len(own_ids)} ids, {len(exclude_rows_of) if exclude_rows_of is not None else 'no'} "
                        f"exclusions.")
    rows = np.full((n, 2 * k), -1, np.int32)
    rng = np.random.default_rng(seed)
    for start in tqdm(range(0, n, batch_size), desc="neighbours", unit="batch", disable=not progress):
        stop = min(start + batch_size, n)
        ids = list(own_ids[start:stop])
        excluded = dict(exclude_rows=exclude_rows,
                        exclude_rows_of=None if exclude_rows_of is None else list(exclude_rows_of[start:stop]))
        by_text = retrieve(bank, index, embedder, list(texts[start:stop]), [None] * (stop - start), options,
                           own_ids=ids, training=True, dropout=dropout, rng=rng, **excluded)
        by_image = retrieve(bank, index, embedder, [None] * (stop - start), list(images[start:stop]), options,
                            own_ids=ids, **excluded)
        for i, (text_hits, image_hits) in enumerate(zip(by_text, by_image)):
            rows[start + i, :len(text_hits)] = [h.row for h in text_hits]
            rows[start + i, k:k + len(image_hits)] = [h.row for h in image_hits]
    return rows


def bank_record(bank_dir: str, bank: MemoryBank) -> dict:
    if bank.fingerprint is None:
        raise UserError("Neighbours refer to a saved memory bank; save the bank (or load it from its directory) first.")
    return {"path": os.path.abspath(bank_dir), "size": len(bank), "fingerprint": bank.fingerprint}


def save_neighbours(directory: str, split: str, rows_NK: np.ndarray, bank_dir: str, bank: MemoryBank,
                    settings: dict) -> None:
    """Writes a split's rows and records `settings` (how they were chosen) for it in the manifest."""
    record = {"bank": bank_record(bank_dir, bank), "splits": {}}
    if MANIFEST.exists(directory):
        existing = MANIFEST.read(directory)
        if existing["bank"] != record["bank"]:
            raise UserError(f"{directory} holds neighbours in another bank ({existing['bank']['path']}); write these "
                            f"to a new directory.")
        record["splits"] = existing["splits"]
    record["splits"][split] = settings
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows_NK, np.int32))
    atomic_write_bytes(os.path.join(directory, f"{split}.npy"), buffer.getvalue())
    MANIFEST.write(directory, record)


def shapes_neighbours(bank: MemoryBank, index: Index, embedder: Embedder, shapes_dir: str, split: str,
                      options: SelectionOptions, dropout: QueryDropout, seed: int = 0,
                      progress: bool = True) -> tuple[np.ndarray, dict]:
    """A Shapes split's neighbours (train: query dropout, unseen emblems held out) and the
    settings to record with them."""
    source = data_source(shapes_dir, split)
    examples = [source[i] for i in range(len(source))]
    if not examples:
        raise UserError(f"Split {split!r} of {shapes_dir} is empty; leave it out of the splits to retrieve for.")
    training = split == "train"
    held_out = unseen_emblem_rows(bank, shapes_dir) if training else frozenset()
    dropout = dropout if training else QueryDropout(0.0)
    scenes = [scene_of(e) for e in examples]
    skip_twins = options.skip_same_meaning or (training and options.share_objects)
    twins = same_meaning_rows(bank, shapes_dir, scenes) if skip_twins else None
    own_ids = [e["id"].decode() for e in examples]
    rows = compute_neighbours(bank, index, embedder, [e["caption"].decode() for e in examples],
                              np.stack([np.asarray(e["image"]) for e in examples]), own_ids, options, dropout, seed,
                              held_out, twins, progress=progress)
    if training and options.share_objects:
        shared = shared_object_rows(bank, shapes_dir, scenes, own_ids, options.k,
                                    [held_out | t for t in twins], np.random.default_rng(seed))
        rows = np.stack([fill_rows(rows_K, first) if first else rows_K for rows_K, first in zip(rows, shared)])
    return rows, {"options": dataclasses.asdict(options), "query_dropout": dropout.rate, "seed": seed,
                  "held_out_rows": sorted(held_out)}


def unseen_emblem_rows(bank: MemoryBank, shapes_dir: str) -> frozenset[int]:
    """Bank rows holding an unseen emblem (a Shapes memory scene of one)."""
    memory = data_source(shapes_dir, "memory")
    unseen_ids = {scene.id for scene in (scene_of(memory[i]) for i in range(min(len(memory), NUM_EMBLEMS)))
                  if scene.emblem in UNSEEN_EMBLEMS}
    return frozenset(row for row, doc_id in enumerate(bank.ids) if doc_id in unseen_ids)


def same_meaning_rows(bank: MemoryBank, shapes_dir: str, scenes: Sequence[Scene]) -> list[frozenset[int]]:
    """For each scene, the bank rows whose memory scene means what it does (the same objects,
    sizes, cells and background: a copy but for jitter). Emblem scenes have none: an emblem's
    document is what the bank is there to give."""
    memory = data_source(shapes_dir, "memory")
    meaning_of_id = {}
    for i in range(len(memory)):
        scene = scene_of(memory[i])
        meaning_of_id[scene.id] = meaning(scene)
    rows_of: dict[tuple, list[int]] = {}
    for row, doc_id in enumerate(bank.ids):
        if doc_id in meaning_of_id:
            rows_of.setdefault(meaning_of_id[doc_id], []).append(row)
    return [frozenset() if s.emblem is not None else frozenset(rows_of.get(meaning(s), ())) for s in scenes]


def object_keys(scene: Scene) -> list[tuple]:
    """What fixes an object's image codes: its shape, colour, size and centre, and the background."""
    return [(scene.background, o.shape, o.color, o.size, tuple(o.center)) for o in scene.objects]


def shared_object_rows(bank: MemoryBank, shapes_dir: str, scenes: Sequence[Scene], own_ids: Sequence[str], k: int,
                       excluded_rows_of: Sequence[Collection[int]], rng: np.random.Generator) -> list[list[int]]:
    """For each scene, up to `k` bank rows whose memory scenes hold its objects exactly, chosen
    greedily to cover the most of them (ties at random), never its own document nor an excluded
    row; emblem scenes get none (their documents are the retriever's to find)."""
    memory = data_source(shapes_dir, "memory")
    keys_of_id = {}
    for i in range(len(memory)):
        scene = scene_of(memory[i])
        keys_of_id[scene.id] = object_keys(scene)
    rows_of: dict[tuple, list[int]] = {}
    for row, doc_id in enumerate(bank.ids):
        for key in keys_of_id.get(doc_id, ()):
            rows_of.setdefault(key, []).append(row)
    chosen_rows = []
    for scene, own_id, excluded in zip(scenes, own_ids, excluded_rows_of):
        uncovered, chosen = set(object_keys(scene)), []
        while uncovered and len(chosen) < k:
            holders: dict[int, int] = {}
            for key in uncovered:
                for row in rows_of.get(key, ()):
                    if row not in excluded and bank.ids[row] != own_id:
                        holders[row] = holders.get(row, 0) + 1
            if not holders:
                break
            most = max(holders.values())
            best = sorted(row for row, n in holders.items() if n == most)
            row = best[int(rng.integers(len(best)))]
            chosen.append(row)
            uncovered -= set(keys_of_id[bank.ids[row]])
        chosen_rows.append(chosen)
    return chosen_rows


def fill_rows(rows_K: np.ndarray, first: Sequence[int]) -> np.ndarray:
    """An example's rows holding `first`, then its retrieved neighbours not among them, k in all:
    laid out so that `sample_context` ranks them in that order and, with k to draw, takes them all."""
    k = len(rows_K) // 2
    ranked = list(dict.fromkeys([int(r) for r in first] + [int(r) for r in _by_rank(rows_K) if r >= 0]))[:k]
    out = np.full(2 * k, -1, np.int32)
    for rank, row in enumerate(ranked):
        out[(rank % 2) * k + rank // 2] = row
    return out


def load_neighbours(directory: str, split: str, bank: MemoryBank) -> np.ndarray:
    """The stored rows of a split, checked against the bank they index."""
    manifest = MANIFEST.read(directory)
    if manifest["bank"]["size"] != len(bank) or manifest["bank"]["fingerprint"] != bank.fingerprint:
        raise UserError(f"The neighbours in {directory} index another memory bank than the one given "
                        f"({manifest['bank']['path']}); compute them again with `cm3jax retrieval neighbours`.")
    path = os.path.join(directory, f"{split}.npy")
    try:
        rows = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"No neighbours for split {split!r} in {directory}; compute them with "
                        f"`cm3jax retrieval neighbours --split {split}`.") from None
    except ValueError as e:
        raise UserError(f"{path} is corrupt ({e}); compute the neighbours again.") from None
    if rows.ndim != 2 or rows.dtype != np.int32 or rows.max(initial=-1) >= len(bank) or rows.min(initial=-1) < -1:
        raise UserError(f"{path} does not hold bank rows (shape {rows.shape}, {rows.dtype}); compute the "
                        f"neighbours again.")
    return rows


def sample_context(bank: MemoryBank, rows_K: np.ndarray, rng: np.random.Generator, max_documents: int = 3
                   ) -> list[np.ndarray]:
    """Token ids of up to `max_documents` distinct neighbours, drawn without replacement, most
    relevant first (by-text and by-image neighbours interleaved by rank)."""
    candidates = list(dict.fromkeys(int(r) for r in _by_rank(rows_K) if r >= 0))
    if not candidates or max_documents <= 0:
        return []
    take = min(max_documents, len(candidates))
    chosen = sorted(rng.choice(len(candidates), size=take, replace=False).tolist())
    return [bank.tokens(candidates[i]) for i in chosen]


def _by_rank(rows_K: np.ndarray) -> np.ndarray:
    half = len(rows_K) // 2
    return np.stack([rows_K[:half], rows_K[half:]], axis=1).reshape(-1)

