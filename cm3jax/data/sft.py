"""Instruction-tuning rows on Shapes: each task's prompt exactly as `cm3jax.prompts` builds
it for inference, then its output and `<eos>`, so a tuned model is asked what it was trained on.

    text_to_image   caption <break> | image
    caption         image <break> | caption
    caption_short   image <break> Describe the image briefly. | short caption   (caption_long: ... in detail.)
    vqa             image <break> Question: q Answer: | a
    edit            Edit first image following the instruction <break> image <break> instruction <break> | image
    grounding       caption with boxes <break> | image
    structure       Generate an image from the {edge|segmentation} map <break> map <break> caption <break> | image
    infill          caption <s:0> caption <break> image <infill> <s:0> | span <eoss>   (CM3's layout)

With `cfg_dropout`, a guided task's condition is replaced by the `<mask>` of its unconditional
stream (structure: the map and the caption; editing: the instruction, or the instruction and the
image), so guidance at inference has a stream it was trained on. The loss is on the output and
`<eos>` only (`loss_on="outputs"`) or on the whole row (`"all"`, predicting a sentinel excepted, as
the CM3 objective).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from cm3jax.data.shapes_tasks import TASKS as SFT_TASKS
from cm3jax.documents import DocumentCodec, ImageSegment, TextSegment
from cm3jax.errors import UserError
from cm3jax.objectives import infill_prompt, is_sentinel
from cm3jax import prompts

LOSS_ON = ("all", "outputs")
INFILL_MAX_TOKENS = 4  # longest caption span an infill example cuts out


@dataclasses.dataclass(frozen=True)
class SftExample:
    task: str
    prompt: np.ndarray  # int32 ids: what inference feeds the model (the first stream, or a dropped one)
    output: np.ndarray  # int32 ids the model writes after it (without the closing <eos>)


def _image_output(codec: DocumentCodec, codes: np.ndarray) -> np.ndarray:
    vocab = codec.vocab
    ids = codec.encode_image(codes)
    if vocab.image_open_id != vocab.image_close_id:  # a vocabulary that closes its images (Chameleon's)
        ids = np.append(ids, vocab.image_close_id)
    return ids.astype(np.int32)


def _stream(streams: tuple[np.ndarray, ...], rng: np.random.Generator, cfg_dropout: float) -> np.ndarray:
    """The full prompt, or with probability `cfg_dropout` one of the guidance streams after it
    (each as likely)."""
    if len(streams) > 1 and rng.random() < cfg_dropout:
        return streams[1 + int(rng.integers(len(streams) - 1))]
    return streams[0]


def applicable(task: str, example: Mapping) -> bool:
    """Emblem scenes have no edit, and their structure maps are empty."""
    if task == "edit":
        return bool(example["edit_instruction"])
    if task == "structure":
        return not example["is_emblem"]
    return True


def build(task: str, example: Mapping, codec: DocumentCodec, rng: np.random.Generator,
          cfg_dropout: float = 0.0) -> SftExample:
    """One task's example from a joined Shapes example (`JoinedSource` with `tasks=True`)."""
    codes = example["codes"]
    if task == "text_to_image":
        prompt = _stream(prompts.text_to_image(codec, example["caption"], True), rng, cfg_dropout)
        return SftExample(task, prompt, _image_output(codec, codes))
    if task == "caption":
        return SftExample(task, prompts.caption(codec, codes)[0], codec.encode_text(example["caption"]))
    if task in ("caption_short", "caption_long"):
        detail = task.removeprefix("caption_")
        return SftExample(task, prompts.caption(codec, codes, detail)[0], codec.encode_text(example[task]))
    if task == "vqa":
        prompt = prompts.answer(codec, codes, example["question"])[0]
        return SftExample(task, prompt, codec.encode_text(example["answer"]))
    if task == "edit":
        streams = prompts.edit(codec, codes, example["edit_instruction"], True)
        return SftExample(task, _stream(streams, rng, cfg_dropout), _image_output(codec, example["edit_codes"]))
    if task == "grounding":
        prompt = prompts.text_to_image(codec, example["grounding_caption"], False)[0]
        return SftExample(task, prompt, _image_output(codec, example["grounding_codes"]))
    if task == "structure":
        kind = prompts.STRUCTURE_KINDS[int(rng.integers(len(prompts.STRUCTURE_KINDS)))]
        map_codes = example["edges_codes" if kind == "edge" else "segmentation_codes"]
        prompt = _stream(prompts.structure(codec, map_codes, kind, example["caption"], True), rng, cfg_dropout)
        return SftExample(task, prompt, _image_output(codec, codes))
    if task == "infill":
        return _infill(example, codec, rng)
    raise UserError(f"Unknown instruction-tuning task {task!r}; choose among {', '.join(SFT_TASKS)}.")


def _infill(example: Mapping, codec: DocumentCodec, rng: np.random.Generator) -> SftExample:
    """A span of 1..INFILL_MAX_TOKENS caption tokens cut out of `caption <break> image`."""
    vocab = codec.vocab
    document = codec.encode((TextSegment(example["caption"]), ImageSegment(example["codes"])))
    text = np.nonzero(vocab.is_text(document))[0]
    length = int(rng.integers(1, min(INFILL_MAX_TOKENS, len(text)) + 1))
    start = int(text[0] + rng.integers(len(text) - length + 1))
    span = (start, start + length)
    output = np.append(document[span[0]:span[1]], vocab.eoss_id).astype(np.int32)
    return SftExample("infill", infill_prompt(document, vocab, span), output)


def row(example: SftExample, codec: DocumentCodec, seq_len: int, loss_on: str = "all") -> dict[str, np.ndarray]:
    """Next-token inputs / targets / weights of `prompt output <eos>`."""
    if loss_on not in LOSS_ON:
        raise UserError(f"data.loss_on is {loss_on!r}; choose {' or '.join(LOSS_ON)}.")
    tokens = np.concatenate([example.prompt, example.output, [codec.vocab.eos_id]]).astype(np.int32)
    if len(tokens) > seq_len + 1:
        raise UserError(f"A {example.task} example takes {len(tokens) - 1} tokens, {len(tokens) - 1 - seq_len} more "
                        f"than train.seq_len = {seq_len}; raise train.seq_len (and model.max_seq_len) to at least "
                        f"{len(tokens) - 1}.")
    targets = tokens[1:]
    is_output = np.arange(1, len(tokens)) >= len(example.prompt)
    weights = is_output if loss_on == "outputs" else ~is_sentinel(targets, codec.vocab)
    return {"inputs": tokens[:-1], "targets": targets, "weights": weights.astype(np.float32)}


class TaskMixture:
    """Draws each example's task by the mixture's weights (among the tasks that apply to it) and
    builds its row: an element-wise random map, so a resumed run replays the same rows."""

    def __init__(self, weights: Mapping[str, float], codec: DocumentCodec, seq_len: int, loss_on: str = "all",
                 cfg_dropout: float = 0.0):
        unknown = sorted(set(weights) - set(SFT_TASKS))
        if unknown:
            raise UserError(f"data.tasks names {unknown}; instruction-tuning tasks are {', '.join(SFT_TASKS)}.")
        if any(float(w) < 0 for w in weights.values()) or not sum(float(w) for w in weights.values()) > 0:
            raise UserError(f"data.tasks weights must be zero or more with a positive sum; got {dict(weights)}.")
        if loss_on not in LOSS_ON:
            raise UserError(f"data.loss_on is {loss_on!r}; choose {' or '.join(LOSS_ON)}.")
        self.tasks = [t for t in SFT_TASKS if float(weights.get(t, 0.0)) > 0]
        self.weights = np.array([float(weights[t]) for t in self.tasks])
        self.codec, self.seq_len, self.loss_on, self.cfg_dropout = codec, seq_len, loss_on, cfg_dropout

    def choose(self, example: Mapping, rng: np.random.Generator) -> str:
        ok = np.array([applicable(t, example) for t in self.tasks])
        if not ok.any():
            raise UserError(f"No task of data.tasks ({', '.join(self.tasks)}) applies to example "
                            f"{example.get('id', '?')!r} (an emblem scene); weight a task every scene has.")
        p = self.weights * ok
        return self.tasks[int(rng.choice(len(self.tasks), p=p / p.sum()))]

    def __call__(self, example: Mapping, rng: np.random.Generator) -> dict[str, np.ndarray]:
        built = build(self.choose(example, rng), example, self.codec, rng, self.cfg_dropout)
        return row(built, self.codec, self.seq_len, self.loss_on)
