"""The Shapes world's retrieval stages, shared by `cm3jax retrieval ...` and `cm3jax demo`:
embed the `memory` split into a bank, index it, and store each example's neighbours; and the
bank and neighbours a retrieval-augmented decoder reads."""

from __future__ import annotations

from typing import Sequence

import ml_collections
import numpy as np

from cm3jax.data.tokenizers import load_codec
from cm3jax.documents import DocumentCodec
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.pretokenize import read_codes
from cm3jax.paths import record_path
from cm3jax.retrieval.bank import MANIFEST as BANK_MANIFEST
from cm3jax.retrieval.bank import MemoryBank, ShapesBankOptions, build_shapes_bank, load_bank, load_embedder
from cm3jax.retrieval.embedder import ClipEmbedder
from cm3jax.retrieval.index import MANIFEST as INDEX_MANIFEST
from cm3jax.retrieval.index import ScannParams, build_index, load_bank_of, load_index, save_index
from cm3jax.retrieval.neighbours import load_neighbours, save_neighbours, shapes_neighbours
from cm3jax.retrieval.select import QueryDropout, SelectionOptions
from cm3jax.shapes.dataset import data_source

# The splits a retrieval-augmented Shapes decoder reads neighbours of: train (training), eval and
# emblems_unseen (evaluation).
SPLITS = ("train", "eval", "emblems_unseen")


def make_bank(clip_dir: str, shapes_dir: str, codes_dir: str, text_tokenizer: str, image_tokenizer: str, out: str,
              options: ShapesBankOptions = ShapesBankOptions(), batch_size: int = 256,
              progress: bool = True) -> tuple[MemoryBank, dict]:
    """Embeds the memory split with a trained CLIP into a bank saved at `out` (absent or empty)."""
    BANK_MANIFEST.check_empty(out)
    tokenizers = {"text_tokenizer": text_tokenizer, "image_tokenizer": image_tokenizer}
    codec, _ = load_codec(ml_collections.ConfigDict({"data": tokenizers}))
    codes = read_codes(codes_dir, "memory", codec.vocab.image_fingerprint)
    record = {"factory": "cm3jax.retrieval.embedder:ClipEmbedder.load", "args": [record_path(clip_dir, out)]}
    bank = build_shapes_bank(shapes_dir, codes, codec, ClipEmbedder.load(clip_dir), embedder_record=record,
                             options=options.check(), batch_size=batch_size, progress=progress)
    return bank, bank.save(out)


def make_index(bank_dir: str, out: str, backend: str = "auto", params: ScannParams = ScannParams()):
    """Indexes a saved bank's keys into `out` (absent or empty); returns the index and its manifest."""
    INDEX_MANIFEST.check_empty(out)
    bank = load_bank(bank_dir)
    index = build_index(bank.keys_ND, backend, params)
    return index, save_index(index, out, bank={**record_path(bank_dir, out), "fingerprint": bank.fingerprint})


def make_neighbours(index_dir: str, shapes_dir: str, splits: Sequence[str], out: str,
                    options: SelectionOptions = SelectionOptions(), dropout: QueryDropout = QueryDropout(),
                    seed: int = 0, progress: bool = True) -> dict[str, dict]:
    """Stores each split's neighbours in `out` (see `neighbours.shapes_neighbours`); returns, by
    split, the number of examples and the mean number of documents found for each."""
    index, manifest = load_index(index_dir)
    bank = load_bank_of(manifest, index_dir)
    embedder = load_embedder(bank.embedder_record, bank.directory)
    found = {}
    for split in splits:
        rows, settings = shapes_neighbours(bank, index, embedder, shapes_dir, split, options.check(), dropout, seed,
                                           progress)
        save_neighbours(out, split, rows, bank.directory, bank, settings)
        found[split] = {"examples": len(rows), "neighbours_per_example": float((rows >= 0).sum(1).mean())}
    return found


def retrieval_inputs(config: ml_collections.ConfigDict, codec: DocumentCodec
                     ) -> tuple[MemoryBank, dict[str, np.ndarray]] | None:
    """(bank, {split: neighbour rows}) for the splits training and evaluation read, or None
    without retrieval; a missing or mismatched piece is an error before any training."""
    if not config.data.get("retrieval_bank"):
        return None
    if not config.data.get("neighbours"):
        raise UserError("data.retrieval_bank is set but data.neighbours is not; compute them with "
                        "`cm3jax retrieval neighbours` and pass --config.data.neighbours=DIR.")
    bank = load_bank(config.data.retrieval_bank, codec.vocab)
    splits = [s for s in SPLITS if len(data_source(config.data.shapes_dir, s))]
    return bank, {split: load_neighbours(config.data.neighbours, split, bank) for split in splits}
