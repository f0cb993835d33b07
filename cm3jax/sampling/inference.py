"""A trained decoder with its tokenizers, ready to draw, caption, answer, edit and infill.

    trained = TrainedDecoder.load("runs/demo/decoder")
    images, generation, _ = trained.text_to_image("a large red circle ...", SamplingSettings(cfg_scale=3), samples=8)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.config import decoder_config, from_json_dict, with_found_paths
from cm3jax.data.tokenizers import load_codec, vocab_from_json
from cm3jax.documents import DocumentCodec, TextSegment
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.codec import decode_codes, encode_images
from cm3jax.image_tokenizer.preprocess import load_image, prepare, prepare_batch
from cm3jax.model.decoder import Decoder
from cm3jax.retrieval.retriever import ImageScorer
from cm3jax import prompts
from cm3jax.sampling.sampler import Generation, generate
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.vocab import MultimodalVocab


@dataclasses.dataclass
class TrainedDecoder:
    model: Decoder
    codec: DocumentCodec
    image_model: nnx.Module
    config: ml_collections.ConfigDict
    step: int

    @classmethod
    def load(cls, workdir: str) -> "TrainedDecoder":
        """The newest checkpoint of a `cm3jax train` run, with the tokenizers its config names (their
        vocabulary must be the checkpoint's)."""
        checkpoints, step = Checkpoints.open_latest(workdir, "decoder", f"cm3jax train --workdir {workdir}")
        with checkpoints:
            saved = checkpoints.restore(step, {"config": Json(), "vocab": Json()})
            config = with_found_paths(from_json_dict(saved["config"]), workdir)
            codec, image_model = load_codec(config)
            codec.vocab.check_matches(vocab_from_json(saved["vocab"]), f"checkpoint {workdir}")
            model = checkpoints.restore_module(step, lambda: Decoder(decoder_config(config), nnx.Rngs(0)),
                                               as_state=True)
        return cls(model, codec, image_model, config, step)

    @property
    def vocab(self) -> MultimodalVocab:
        return self.codec.vocab

    def encode_image(self, image) -> np.ndarray:
        """Code grid [h, w] of an image file or uint8 array, preprocessed as Chameleon does."""
        resolution = self.image_model.config.resolution
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise UserError(f"An image array must be uint8 [H, W, 3]; got {image.dtype} {image.shape}.")
            return self.encode_images(image[None])[0]
        return encode_images(self.image_model, prepare(load_image(image), resolution)[None])[0]

    def encode_images(self, images_NHW3: np.ndarray) -> np.ndarray:
        """Code grids [N, h, w] of uint8 RGB images, each preprocessed as `encode_image` does."""
        prepared = prepare_batch([Image.fromarray(im) for im in images_NHW3], self.image_model.config.resolution)
        return encode_images(self.image_model, prepared)

    def decode_images(self, generation: Generation) -> np.ndarray:
        """uint8 [N, H, W, 3]: each sample's first complete image (black where a sample has none)."""
        if not self.config.get("data", {}).get("image_decoder", True):
            raise UserError("This checkpoint's image tokenizer has only its encoder (a Hugging Face Chameleon import "
                            "without --vqgan), so image tokens cannot become pixels; import it again with `cm3jax "
                            "import chameleon ... --vqgan DIR` (Chameleon's vqgan.yaml and vqgan.ckpt).")
        grids = []
        for i in range(len(generation.tokens)):
            ids = generation.sample(i)
            codes = self.vocab.codes(ids[self.vocab.is_image(ids)])[:self.vocab.image_tokens]
            grids.append(codes.reshape(self.codec.grid) if codes.size == self.vocab.image_tokens else None)
        side = self.image_model.config.resolution
        images = np.zeros((len(grids), side, side, 3), np.uint8)
        complete = [i for i, grid in enumerate(grids) if grid is not None]
        if complete:
            images[complete] = decode_codes(self.image_model, np.stack([grids[i] for i in complete]))
        return images

    def _run(self, request, settings: SamplingSettings, samples: int, max_new: int, until: str,
             seed: int) -> Generation:
        return generate(self.model, self.vocab, [request] * samples, settings, max_new, seed=seed, until=until)

    def text_to_image(self, caption: str, settings: SamplingSettings, samples: int = 1, seed: int = 0,
                      context: Sequence[np.ndarray] = (), rerank: ImageScorer | None = None):
        """Images [N, H, W, 3] for a caption (N = samples, or 1 when re-ranked: the best by `rerank`),
        the generation, and the re-ranking scores. `context`: retrieved documents' ids, most relevant
        first, laid out before the prompt in every stream (`doc <eos> doc <eos> prompt`); those that
        do not fit in the context are left out, the least relevant first."""
        guided = settings.cfg_scale != 1.0 or settings.contrastive
        request = with_context(prompts.text_to_image(self.codec, caption, guided), context, self.vocab.eos_id,
                               self.model.config.max_seq_len - self.vocab.image_tokens)
        generation = self._run(request, settings, samples, self.vocab.image_tokens, "image", seed)
        images = self.decode_images(generation)
        scores = None
        if rerank is not None:
            scores = np.asarray(rerank(caption, images))
            images = images[[int(np.argmax(scores))]]
        return images, generation, scores

    def text(self, generation: Generation, i: int = 0) -> str:
        """The text a sample produced (specials and images left out)."""
        ids = generation.sample(i)
        return "".join(s.text for s in self.codec.decode(ids[self.vocab.is_text(ids)]) if isinstance(s, TextSegment))

    def caption(self, image, settings: SamplingSettings, max_new: int = 48, seed: int = 0, detail: str = "full") -> str:
        """`detail` "full" asks as pretraining does; "short" and "long" by the instruction tuning's
        instructions (cm3jax.prompts.CAPTION_INSTRUCTIONS)."""
        request = prompts.caption(self.codec, self.encode_image(image), detail)
        generation = self._run(request, settings, 1, max_new, "eos", seed)
        return self.text(generation).strip()

    def answer(self, image, question: str, settings: SamplingSettings, max_new: int = 16, seed: int = 0) -> str:
        request = prompts.answer(self.codec, self.encode_image(image), question)
        return self.text(self._run(request, settings, 1, max_new, "eos", seed)).strip().rstrip(".")

    def edit(self, image, instruction: str, settings: SamplingSettings, samples: int = 1, seed: int = 0):
        guided = settings.image_scale != 1.0 or settings.text_scale != 1.0 or settings.contrastive
        request = prompts.edit(self.codec, self.encode_image(image), instruction, guided)
        generation = self._run(request, settings, samples, self.vocab.image_tokens, "image", seed)
        return self.decode_images(generation), generation

    def infill(self, before: str, after: str, settings: SamplingSettings, max_new: int = 24, seed: int = 0) -> str:
        generation = self._run(prompts.infill(self.codec, before, after), settings, 1, max_new, "span", seed)
        return self.text(generation)


def with_context(request: tuple[np.ndarray, ...], context: Sequence[np.ndarray], eos_id: int, budget: int
                 ) -> tuple[np.ndarray, ...]:
    """Each stream's prompt after as many of the retrieved documents (each closed by <eos>) as fit
    in `budget` tokens with the longest stream, dropping the least relevant (last) first."""
    longest = max(len(p) for p in request)
    docs = [np.append(np.asarray(c, np.int32), eos_id) for c in context]
    while docs and sum(len(d) for d in docs) + longest > budget:
        docs.pop()
    return tuple(np.concatenate([*docs, p]).astype(np.int32) for p in request)
