"""Shapes pretraining documents: a caption and its image's codes, in either order.

    text -> image:  caption <break> image      (with probability cfg_dropout the caption is <mask>)
    image -> text:  image <break> caption

Examples join a made Shapes dataset and its pretokenized codes by index. With
`data.throwaway_emblems`, a share of them become emblems invented for the example, drawn
after their own document: retrieval-augmented training where copying is the only way.
"""

from __future__ import annotations

import dataclasses

import grain.python as grain
import ml_collections
import numpy as np

from cm3jax.documents import ImageSegment, SpecialToken, TextSegment
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.pretokenize import read_codes
from cm3jax.shapes.captions import EMBLEM_FORMS
from cm3jax.shapes.dataset import data_source, scene_of
from cm3jax.shapes.emblems import THROWAWAY_NAMES


# What a Shapes decoder can be trained to do (cm3jax eval scores each where it was trained).
TASKS = ("text_to_image", "caption", "caption_short", "caption_long", "infill", "vqa", "edit", "grounding",
         "structure")


def trained_tasks(data: ml_collections.ConfigDict) -> frozenset[str]:
    """The tasks a decoder trained on `data` (its config's `data`) has seen: pretraining teaches
    text -> image and, with `image_to_text`, captions; the CM3 objective (`cm3_rate`) infilling;
    a `tasks` mapping (task -> mixture weight) adds the instruction-tuning tasks it weights."""
    image_first = float(data.get("image_to_text", 0.0))
    found = set()
    if image_first < 1.0:
        found.add("text_to_image")
    if image_first > 0.0:
        found.add("caption")
    if float(data.get("cm3_rate", 0.0)) > 0.0:
        found.add("infill")
    found |= {task for task, weight in dict(data.get("tasks") or {}).items() if float(weight) > 0.0}
    unknown = found - set(TASKS)
    if unknown:
        raise UserError(f"data.tasks names {sorted(unknown)}, which are not Shapes tasks ({', '.join(TASKS)}).")
    return frozenset(found)


def trained_unconditionally(data: ml_collections.ConfigDict) -> bool:
    """Whether captions were dropped to <mask> in training, so an unconditional stream means
    something (classifier-free guidance and CD-K need one)."""
    return float(data.get("cfg_dropout", 0.0)) > 0.0 and "text_to_image" in trained_tasks(data)


@dataclasses.dataclass(frozen=True)
class ShapesMixture:
    image_to_text: float = 0.5  # share of documents that put the image first
    cfg_dropout: float = 0.1  # text -> image documents whose caption becomes <mask>


# What an instruction-tuning example reads besides the caption and image codes (cm3jax.data.sft).
TASK_TEXTS = ("caption_short", "caption_long", "question", "answer", "edit_instruction", "grounding_caption")
TASK_CODES = ("edit_codes", "grounding_codes", "edges_codes", "segmentation_codes")


class JoinedSource(grain.RandomAccessDataSource):
    """Example i: the Shapes example's caption and the codes of its image; with `tasks`, also
    every instruction-tuning task's texts and codes, and whether the scene is an emblem."""

    def __init__(self, shapes_dir: str, codes_dir: str, split: str, tokenizer_fingerprint: str | None = None,
                 tasks: bool = False):
        self.tasks = tasks
        self.scenes = data_source(shapes_dir, split)
        self.codes = read_codes(codes_dir, split, tokenizer_fingerprint)
        if len(self.scenes) != len(self.codes):
            raise UserError(f"{shapes_dir} has {len(self.scenes)} {split} scenes but {codes_dir} has codes for "
                            f"{len(self.codes)}; pretokenize this dataset again.")

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict:
        scene, codes = self.scenes[index], self.codes[index]
        if scene["id"] != codes["id"]:
            raise UserError(f"Scene {scene['id']!r} and codes {codes['id']!r} do not pair up at index {index}.")
        example = {"caption": scene["caption"].decode(), "codes": np.asarray(codes["codes"]), "index": index}
        if self.tasks:
            missing = [key for key in TASK_CODES if key not in codes]
            if missing:
                raise UserError(f"The codes lack {', '.join(missing)} (pretokenized from image files, not a made "
                                f"Shapes dataset); instruction tuning needs codes from `cm3jax tokenizer pretokenize "
                                f"--source SHAPES_DIR`.")
            example.update({key: scene[key].decode() for key in TASK_TEXTS})
            example.update({key: np.asarray(codes[key]) for key in TASK_CODES})
            example["id"] = scene["id"].decode()
            example["is_emblem"] = scene_of(scene).emblem is not None
        return example


def shapes_document(example: dict, rng: np.random.Generator, mixture: ShapesMixture) -> tuple:
    image = ImageSegment(example["codes"])
    if rng.random() < mixture.image_to_text:
        return (image, TextSegment(example["caption"]))
    caption = SpecialToken("<mask>") if rng.random() < mixture.cfg_dropout else TextSegment(example["caption"])
    return (caption, image)


def training_share(key: str, value: float) -> float:
    """`value` of config `key`, a share of the training examples, checked to lie in 0..1."""
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{key} is a share of the training examples, 0 to 1; got {value}.")
    return value


class ThrowawayEmblemMix:
    """Replaces a share `rate` of examples by an emblem invented for that example: a random
    name (THROWAWAY_NAMES) on a random pattern of `patterns_codes` (the codes of
    `throwaway_patterns`), with its document and a distractor's (another invented pair) before
    it, in random order. Only copying the matching document predicts such an example. An
    element-wise random map, so a resumed run replays the same examples."""

    def __init__(self, patterns_codes_Nhw: np.ndarray, rate: float):
        training_share("data.throwaway_emblems", rate)
        if rate and len(patterns_codes_Nhw) < 2:
            raise UserError("data.throwaway_emblems needs at least 2 patterns (data.throwaway_patterns).")
        self.codes, self.rate = patterns_codes_Nhw, rate

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        if rng.random() >= self.rate:
            return example
        names = [THROWAWAY_NAMES[i] for i in rng.choice(len(THROWAWAY_NAMES), size=2, replace=False)]
        patterns = rng.choice(len(self.codes), size=2, replace=False)
        forms = rng.integers(len(EMBLEM_FORMS), size=3)
        documents = [(EMBLEM_FORMS[forms[1]].format(names[0]), self.codes[patterns[0]]),
                     (EMBLEM_FORMS[forms[2]].format(names[1]), self.codes[patterns[1]])]
        if rng.random() < 0.5:
            documents.reverse()
        return {"caption": EMBLEM_FORMS[forms[0]].format(names[0]), "codes": self.codes[patterns[0]], "index": -1,
                "documents": documents}


def throwaway_context(example: dict, codec) -> list[np.ndarray] | None:
    """The token ids of a throwaway example's documents (`caption <break> image`, as the
    memory bank stores them); None for an ordinary example."""
    if "documents" not in example:
        return None
    return [codec.encode([TextSegment(text), ImageSegment(codes)]) for text, codes in example["documents"]]
