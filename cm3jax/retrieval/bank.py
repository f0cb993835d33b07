"""The memory bank: the documents retrieval can return, each with its key embedding.

A document is text, an image, or text + image (the caption first: `caption <break> image`,
the text -> image layout of the pretraining documents). Each holds a stable string id, its
token ids for the decoder (`DocumentCodec`), its text and/or pixels for display, and its key:
the embedder's unit vector for it (for text + image, the normalised mean of the normalised
text and image embeddings, as CM3Leon embeds a pair). Row i of `keys` is document i, so an
index over the keys returns rows.

On disk a bank is a directory (built aside, renamed into place once complete):

    cm3jax_bank.json   manifest: sizes, embedder, vocabulary, source, every file's SHA-256
    keys.npy           float32 [N, D] unit keys
    tokens.npy         int32 [T] every document's token ids, concatenated
    offsets.npy        int64 [N + 1] document i is tokens[offsets[i]:offsets[i + 1]]
    kinds.npy          int8 [N] index into KINDS
    images.npy         uint8 [M, R, R, 3] the images of the M documents that have one
    image_rows.npy     int32 [N] row of images.npy, or -1
    documents.json     {"ids": [...], "texts": [... or null]}

Loading checks every file against the manifest and refuses anything else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
from tqdm import tqdm

from cm3jax.documents import DocumentCodec, ImageSegment, TextSegment
from cm3jax.errors import UserError
from cm3jax.fileio import built_aside
from cm3jax.manifest import ManifestSpec, fingerprint, record_files
from cm3jax.paths import find_path
from cm3jax.shapes.dataset import data_source, load_spec, scene_of
from cm3jax.vocab import MultimodalVocab

TEXT, IMAGE, TEXT_IMAGE = "text", "image", "text+image"
KINDS = (TEXT, IMAGE, TEXT_IMAGE)
ARRAY_FILES = ("keys.npy", "tokens.npy", "offsets.npy", "kinds.npy", "images.npy", "image_rows.npy")
DOCUMENTS_FILE = "documents.json"
MANIFEST = ManifestSpec("cm3jax_bank.json", "memory bank", "`cm3jax retrieval bank --out {directory}`",
                        format="cm3jax-memory-bank", version=1,
                        keys=("size", "dim", "fingerprint", "embedder", "vocab", "source", "files"))
UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed for a key


@runtime_checkable
class Embedder(Protocol):
    """What the bank and the retriever need from a dual encoder (CLIP). Every output row is
    float32 and L2-normalised."""

    dim: int

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """[N, D] keys of texts."""

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """[N, D] keys of uint8 [N, H, W, 3] images."""

    def embed_documents(self, texts: Sequence[str | None], images: list[np.ndarray | None]) -> np.ndarray:
        """[N, D] keys of documents: text, image, or the normalised mean of both keys."""


def load_embedder(record: dict, bank_dir: str | None = None) -> Embedder:
    """The embedder a bank was built with, from its record {"factory": "module:qualname", "args": [...]};
    an argument recorded as a path (`cm3jax.paths.record_path`) is found again from the bank's
    directory."""
    factory = record.get("factory")
    args = [find_path(a, bank_dir) if isinstance(a, dict) else a for a in record.get("args", [])]
    if not isinstance(factory, str) or ":" not in factory:
        raise UserError(f"The bank's embedder record {record} names no factory ('module:callable'); rebuild the bank.")
    module_name, qualname = factory.split(":", 1)
    try:
        target = importlib.import_module(module_name)
        for attribute in qualname.split("."):
            target = getattr(target, attribute)
    except (ImportError, AttributeError) as e:
        raise UserError(f"Cannot load the bank's embedder {factory} ({e}); install the code that built the bank "
                        f"or rebuild the bank with an embedder available here.") from None
    return target(*args)


@dataclasses.dataclass(frozen=True, eq=False)
class SourceDocument:
    """A memory document before it is embedded: text, image (with its codes) or both."""
    id: str
    text: str | None = None
    image: np.ndarray | None = None  # uint8 [R, R, 3]
    codes: np.ndarray | None = None  # int [h, w], the image's tokenizer codes

    @property
    def kind(self) -> str:
        if self.text is not None and self.image is not None:
            return TEXT_IMAGE
        if self.text is not None:
            return TEXT
        if self.image is not None:
            return IMAGE
        raise UserError(f"Document {self.id!r} has neither text nor an image.")


@dataclasses.dataclass(frozen=True, eq=False)
class StoredDocument:
    """One bank document as stored: `row` is its position (what an index returns)."""
    row: int
    id: str
    kind: str
    tokens: np.ndarray  # int32 [T]
    text: str | None
    image: np.ndarray | None  # uint8 [R, R, 3]


def document_tokens(codec: DocumentCodec, document: SourceDocument) -> np.ndarray:
    segments = []
    if document.text is not None:
        segments.append(TextSegment(document.text))
    if document.image is not None:
        if document.codes is None:
            raise UserError(f"Document {document.id!r} has an image but no image codes; pretokenize its images.")
        segments.append(ImageSegment(np.asarray(document.codes)))
    return codec.encode(segments)


class MemoryBank:
    def __init__(self, ids: Sequence[str], kinds_N: np.ndarray, tokens_T: np.ndarray, offsets_N1: np.ndarray,
                 texts: Sequence[str | None], images_MRR3: np.ndarray, image_rows_N: np.ndarray,
                 keys_ND: np.ndarray, info: dict):
        self.ids = list(ids)
        self.kinds_N = np.asarray(kinds_N, np.int8)
        self.tokens_T = np.asarray(tokens_T, np.int32)
        self.offsets_N1 = np.asarray(offsets_N1, np.int64)
        self.texts = list(texts)
        self.images_MRR3 = np.asarray(images_MRR3, np.uint8)
        self.image_rows_N = np.asarray(image_rows_N, np.int32)
        self.keys_ND = np.asarray(keys_ND, np.float32)
        self.info = info  # embedder, vocab, source: what the manifest records beside the files
        self._check()
        self._row_of = {doc_id: row for row, doc_id in enumerate(self.ids)}
        if len(self._row_of) != len(self.ids):
            raise UserError("The bank's document ids are not unique; every document needs its own id.")
        self._digests: list[bytes] | None = None
        self.fingerprint: str | None = None  # "sha256:..." of the saved files, once saved or loaded
        self.directory: str | None = None  # where it was saved or loaded from

    def _check(self) -> None:
        n = len(self.ids)
        shapes = {"kinds": self.kinds_N.shape, "offsets": self.offsets_N1.shape, "texts": (len(self.texts),),
                  "image_rows": self.image_rows_N.shape, "keys": self.keys_ND.shape[:1]}
        expected = {"kinds": (n,), "offsets": (n + 1,), "texts": (n,), "image_rows": (n,), "keys": (n,)}
        bad = [f"{k} {shapes[k]} (expected {expected[k]})" for k in shapes if shapes[k] != expected[k]]
        if self.keys_ND.ndim != 2 or self.images_MRR3.ndim != 4:
            bad.append(f"keys are {self.keys_ND.ndim}-D and images {self.images_MRR3.ndim}-D (expected 2 and 4)")
        if bad:
            raise UserError(f"The memory bank is inconsistent: {'; '.join(bad)}. Rebuild it.")
        if self.offsets_N1[0] != 0 or self.offsets_N1[-1] != self.tokens_T.size or np.any(np.diff(self.offsets_N1) < 0):
            bad.append("token offsets do not cover the tokens in order")
        if np.any((self.kinds_N < 0) | (self.kinds_N >= len(KINDS))):
            bad.append("documents of unknown kinds")
        else:
            kinds = np.asarray(KINDS)[self.kinds_N]
            if np.any((self.image_rows_N >= 0) != np.isin(kinds, (IMAGE, TEXT_IMAGE))):
                bad.append("documents whose images do not match their kind")
            if np.any(np.array([t is not None for t in self.texts], bool) != np.isin(kinds, (TEXT, TEXT_IMAGE))):
                bad.append("documents whose texts do not match their kind")
        if np.any(self.image_rows_N >= len(self.images_MRR3)):
            bad.append("image rows past the stored images")
        if bad:
            raise UserError(f"The memory bank is inconsistent: {'; '.join(bad)}. Rebuild it.")
        norms = np.linalg.norm(self.keys_ND, axis=1)
        if n and np.max(np.abs(norms - 1)) > UNIT_TOLERANCE:
            worst = int(np.argmax(np.abs(norms - 1)))
            raise UserError(f"Key {worst} ({self.ids[worst]!r}) has norm {norms[worst]:.4f}, not 1: the embedder "
                            f"must return L2-normalised rows.")

    # ---- reading
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.keys_ND.shape[1]

    @property
    def vocab(self) -> MultimodalVocab:
        return MultimodalVocab.from_json(self.info["vocab"])

    @property
    def embedder_record(self) -> dict:
        return self.info["embedder"]

    @property
    def image_resolution(self) -> int | None:
        return int(self.images_MRR3.shape[1]) if len(self.images_MRR3) else None

    def row_of(self, doc_id: str) -> int:
        try:
            return self._row_of[doc_id]
        except KeyError:
            raise UserError(f"The bank holds no document {doc_id!r}.") from None

    def kind(self, row: int) -> str:
        return KINDS[self.kinds_N[row]]

    def is_multimodal(self, rows) -> np.ndarray:
        return self.kinds_N[np.asarray(rows)] == KINDS.index(TEXT_IMAGE)

    def tokens(self, row: int) -> np.ndarray:
        return self.tokens_T[self.offsets_N1[row]:self.offsets_N1[row + 1]]

    def image(self, row: int) -> np.ndarray | None:
        i = self.image_rows_N[row]
        return None if i < 0 else self.images_MRR3[i]

    def document(self, row: int) -> StoredDocument:
        if not 0 <= row < len(self):
            raise UserError(f"Row {row} is outside the bank (0..{len(self) - 1}).")
        return StoredDocument(row, self.ids[row], self.kind(row), self.tokens(row), self.texts[row], self.image(row))

    def content_digest(self, row: int) -> bytes:
        """SHA-1 of a document's token ids: equal digests, same content."""
        if self._digests is None:
            self._digests = [hashlib.sha1(self.tokens(i).tobytes()).digest() for i in range(len(self))]
        return self._digests[row]

    # ---- saving
    def save(self, directory: str) -> dict:
        """Writes the bank to `directory` (absent or empty), built aside; returns its manifest."""
        MANIFEST.check_empty(directory)
        arrays = {"keys.npy": self.keys_ND, "tokens.npy": self.tokens_T, "offsets.npy": self.offsets_N1,
                  "kinds.npy": self.kinds_N, "images.npy": self.images_MRR3, "image_rows.npy": self.image_rows_N}
        with built_aside(directory, prefix=".tmp-bank-") as staging:
            for name, array in arrays.items():
                np.save(os.path.join(staging, name), np.ascontiguousarray(array), allow_pickle=False)
            with open(os.path.join(staging, DOCUMENTS_FILE), "w") as f:
                json.dump({"ids": self.ids, "texts": self.texts}, f)
            written = MANIFEST.write(staging, self.manifest(record_files(staging)))
        self.fingerprint, self.directory = written["fingerprint"], directory
        return written

    def manifest(self, files: dict) -> dict:
        counts = {kind: int(np.sum(self.kinds_N == i)) for i, kind in enumerate(KINDS)}
        return {"size": len(self), "dim": self.dim, "kinds": counts, "fingerprint": fingerprint(files),
                **self.info, "files": files}


def read_bank_manifest(directory: str) -> dict:
    found = MANIFEST.read(directory)
    expected = set(ARRAY_FILES) | {DOCUMENTS_FILE}
    if set(found["files"]) != expected:
        raise UserError(f"The manifest of {directory} lists files {sorted(found['files'])}, expected "
                        f"{sorted(expected)}; make the bank again with {MANIFEST.command(directory)}.")
    return found


def load_bank(directory: str, vocab: MultimodalVocab | None = None) -> MemoryBank:
    """The bank saved in `directory`, every file checked against its manifest. Given `vocab`
    (the decoder's), refuses a bank whose token ids were made with another vocabulary."""
    found = read_bank_manifest(directory)
    MANIFEST.check_files(directory, found["files"])
    arrays = {name: np.load(os.path.join(directory, name), allow_pickle=False) for name in ARRAY_FILES}
    with open(os.path.join(directory, DOCUMENTS_FILE)) as f:
        documents = json.load(f)
    info = {k: found[k] for k in ("embedder", "vocab", "source")}
    bank = MemoryBank(documents["ids"], arrays["kinds.npy"], arrays["tokens.npy"], arrays["offsets.npy"],
                      documents["texts"], arrays["images.npy"], arrays["image_rows.npy"], arrays["keys.npy"], info)
    if len(bank) != found["size"] or bank.dim != found["dim"]:
        raise UserError(f"{directory} holds {len(bank)} x {bank.dim} keys but its manifest says "
                        f"{found['size']} x {found['dim']}; make the bank again with {MANIFEST.command(directory)}.")
    if vocab is not None:
        vocab.check_matches(bank.vocab, f"the memory bank {directory}")
    bank.fingerprint, bank.directory = found["fingerprint"], directory
    return bank


# ----------------------------------------------------------------------------- building

def build_bank(documents: Sequence[SourceDocument], embedder: Embedder, codec: DocumentCodec, *,
               embedder_record: dict, source: dict, batch_size: int = 256, progress: bool = True) -> MemoryBank:
    """Embeds and tokenizes `documents` in order (row i is documents[i]).

    `embedder_record` ({"factory": "module:qualname", "args": [...]}) says how to make the
    embedder again at query time; `source` records where the documents came from."""
    if not documents:
        raise UserError("The memory bank would be empty; give it at least one document.")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")
    kinds = np.array([KINDS.index(d.kind) for d in documents], np.int8)
    tokens = [document_tokens(codec, d) for d in documents]
    offsets = np.concatenate([[0], np.cumsum([t.size for t in tokens])]).astype(np.int64)
    with_image = [d for d in documents if d.image is not None]
    resolutions = {np.asarray(d.image).shape for d in with_image}
    if len(resolutions) > 1:
        raise UserError(f"The documents' images have different shapes {sorted(resolutions)}; resize them to one.")
    images = (np.stack([np.asarray(d.image, np.uint8) for d in with_image]) if with_image
              else np.zeros((0, 1, 1, 3), np.uint8))
    image_rows = np.full(len(documents), -1, np.int32)
    image_rows[[i for i, d in enumerate(documents) if d.image is not None]] = np.arange(len(with_image))
    keys = np.zeros((len(documents), embedder.dim), np.float32)
    for start in tqdm(range(0, len(documents), batch_size), desc="embed bank", unit="batch", disable=not progress):
        batch = documents[start:start + batch_size]
        keys[start:start + len(batch)] = embedder.embed_documents([d.text for d in batch], [d.image for d in batch])
    info = {"embedder": embedder_record, "vocab": codec.vocab.to_json(), "source": source}
    return MemoryBank([d.id for d in documents], kinds, np.concatenate(tokens), offsets,
                      [d.text for d in documents], images, image_rows, keys, info)


@dataclasses.dataclass(frozen=True)
class ShapesBankOptions:
    """How the Shapes `memory` split becomes documents. Each captioned scene becomes, by a
    seeded draw, a text-only document (caption), an image-only one (image) or, otherwise, a
    text + image one; emblem documents always keep both (their name is only useful next to
    their picture)."""
    text_only: float = 0.1
    image_only: float = 0.1
    seed: int = 0

    def check(self) -> "ShapesBankOptions":
        if self.text_only < 0 or self.image_only < 0 or self.text_only + self.image_only > 1:
            raise UserError(f"text_only ({self.text_only}) and image_only ({self.image_only}) are shares: each "
                            f"at least 0 and together at most 1.")
        return self


def shapes_documents(shapes_dir: str, codes: Sequence[dict], options: ShapesBankOptions = ShapesBankOptions()
                     ) -> list[SourceDocument]:
    """The memory split of a made Shapes dataset as documents, joined by index with `codes`
    (a random-access sequence of {"id", "codes"}, e.g. `read_codes(codes_dir, "memory")`)."""
    options.check()
    scenes = data_source(shapes_dir, "memory")
    if len(scenes) == 0:
        raise UserError(f"{shapes_dir} has an empty memory split; make it with --num-memory of at least 32.")
    if len(codes) != len(scenes):
        raise UserError(f"{shapes_dir} has {len(scenes)} memory scenes but the codes hold {len(codes)}; "
                        f"pretokenize this dataset again.")
    documents = []
    for i in range(len(scenes)):
        example, coded = scenes[i], codes[i]
        doc_id, coded_id = _text(example["id"]), _text(coded["id"])
        if doc_id != coded_id:
            raise UserError(f"Scene {doc_id!r} and codes {coded_id!r} do not pair up at index {i}; "
                            f"pretokenize this dataset again.")
        draw = np.random.default_rng([options.seed, i]).random()
        kind = TEXT_IMAGE
        if scene_of(example).emblem is None:
            kind = TEXT if draw < options.text_only else IMAGE if draw < options.text_only + options.image_only \
                else TEXT_IMAGE
        text = _text(example["caption"]) if kind != IMAGE else None
        image, grid = (np.asarray(example["image"]), np.asarray(coded["codes"])) if kind != TEXT else (None, None)
        documents.append(SourceDocument(doc_id, text, image, grid))
    return documents


def build_shapes_bank(shapes_dir: str, codes: Sequence[dict], codec: DocumentCodec, embedder: Embedder, *,
                      embedder_record: dict, options: ShapesBankOptions = ShapesBankOptions(),
                      batch_size: int = 256, progress: bool = True) -> MemoryBank:
    documents = shapes_documents(shapes_dir, codes, options)
    source = {"kind": "shapes", "split": "memory", "world": dataclasses.asdict(load_spec(shapes_dir)),
              "options": dataclasses.asdict(options)}
    return build_bank(documents, embedder, codec, embedder_record=embedder_record, source=source,
                      batch_size=batch_size, progress=progress)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
