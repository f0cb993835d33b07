"""A saved index with the memory bank and embedder it was built from, ready to answer queries:
what `cm3jax retrieval query` and `cm3jax generate --retrieve` retrieve with.

    retriever = Retriever.load("runs/demo/index")
    hits = retriever.query("the flag of vexland", image=None, k=5)
    context, records = retriever.for_prompt("the flag of vexland", k=2, vocab=trained.vocab)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from cm3jax.image_tokenizer.preprocess import load_image, resize_and_centre_crop, to_rgb
from cm3jax.retrieval.bank import Embedder, MemoryBank, load_embedder
from cm3jax.retrieval.embedder import ClipEmbedder
from cm3jax.retrieval.index import Index, load_bank_of, load_index
from cm3jax.retrieval.select import Hit, SelectionOptions, retrieve, select
from cm3jax.vocab import MultimodalVocab

DEFAULT_RESOLUTION = 224  # for image queries against a bank without images

# Scores images [N, H, W, 3] uint8 against one caption; higher is better (CLIP re-ranking).
ImageScorer = Callable[[str, np.ndarray], np.ndarray]


def _selection(k: int, max_relevance: float | None = SelectionOptions.max_relevance) -> SelectionOptions:
    return SelectionOptions(k=k, candidates=max(32, 4 * k), max_relevance=max_relevance)


@dataclasses.dataclass
class Retriever:
    directory: str
    index: Index
    bank: MemoryBank
    embedder: Embedder

    @classmethod
    def load(cls, index_dir: str) -> "Retriever":
        """The index in `index_dir`, refused unless its bank still holds the keys it indexes."""
        index, manifest = load_index(index_dir)
        bank = load_bank_of(manifest, index_dir)
        return cls(index_dir, index, bank, load_embedder(bank.embedder_record, bank.directory))

    @property
    def image_resolution(self) -> int:
        return self.bank.image_resolution or DEFAULT_RESOLUTION

    def load_query_image(self, path: str) -> np.ndarray:
        """uint8 [R, R, 3]: an image file resized and centre-cropped to the bank's images' side."""
        return np.asarray(resize_and_centre_crop(to_rgb(load_image(path)), self.image_resolution), np.uint8)

    def query(self, text: str | None, image: np.ndarray | None, k: int, heuristics: bool = False) -> list[Hit]:
        """The k documents nearest a text and/or image query, best first; with `heuristics`,
        chosen by CM3Leon's selection rules among the nearest candidates."""
        key = self.embedder.embed_documents([text], [image])
        if heuristics:
            options = _selection(k)
            return select(self.bank, *(found[0] for found in self.index.search(key, options.candidates)), options)
        ids, scores = self.index.search(key, k)
        return [Hit(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def for_prompt(self, prompt: str, k: int, vocab: MultimodalVocab) -> tuple[list[np.ndarray], list[dict]]:
        """Token ids of the k documents the selection heuristics pick for a text prompt, most
        relevant first, and a record of each (id, kind, text, score). Unlike at training time,
        documents matching the prompt closely are kept: there is no query document here to copy,
        and the closest match is what the prompt asks for."""
        return self.for_prompts([prompt], k, vocab)[0]

    def for_prompts(self, prompts: Sequence[str], k: int, vocab: MultimodalVocab
                    ) -> list[tuple[list[np.ndarray], list[dict]]]:
        """`for_prompt` for many prompts, embedded and searched in batches."""
        vocab.check_matches(self.bank.vocab, f"the memory bank of {self.directory}")
        found = retrieve(self.bank, self.index, self.embedder, list(prompts), [None] * len(prompts),
                         _selection(k, None))
        return [([self.bank.tokens(h.row) for h in hits],
                 [{"id": self.bank.ids[h.row], "kind": self.bank.kind(h.row), "text": self.bank.texts[h.row],
                   "score": h.score} for h in hits]) for hits in found]

    def tiles(self, query_text: str | None, query_image: np.ndarray | None, hits: list[Hit]
              ) -> tuple[np.ndarray, list[str]]:
        """The query and its documents as uint8 tiles [1 + K, R, R, 3] (white where there is no
        image) with a caption each, for a grid."""
        blank = np.full((self.image_resolution, self.image_resolution, 3), 255, np.uint8)
        tiles = [query_image if query_image is not None else blank]
        captions = [f"query: {query_text or '(image)'}"]
        for hit in hits:
            image = self.bank.image(hit.row)
            tiles.append(image if image is not None else blank)
            captions.append(f"{hit.score:.3f} {self.bank.ids[hit.row]}: {self.bank.texts[hit.row] or '(image)'}")
        return np.stack(tiles), captions


def clip_image_scorer(clip_workdir: str) -> ImageScorer:
    """Scores images against a caption by the cosine of their embeddings by a trained CLIP."""
    embedder = ClipEmbedder.load(clip_workdir)
    return lambda caption, images: embedder.embed_images(images) @ embedder.embed_texts([caption])[0]
