"""Instruction-tuning rows: every template renders as the inference prompt plus its output and
parses back to the example; outputs-only loss weights exactly the output and <eos>; condition
dropout gives the guidance streams; the mixture draws only tasks an example has."""

import numpy as np
import pytest

from cm3jax.data.sft import SFT_TASKS, SftExample, TaskMixture, build, row
from cm3jax.documents import DocumentCodec, ImageSegment, SpecialToken, TextSegment
from cm3jax.errors import UserError
from cm3jax.objectives import is_sentinel, unmask
from cm3jax import prompts
from cm3jax.shapes.captions import describe, parse
from cm3jax.shapes.dataset import example_tasks
from cm3jax.vocab import MultimodalVocab

GRID = (4, 4)
CODEBOOK = 32


@pytest.fixture(scope="module")
def codec(tokenizer_files):
    text = tokenizer_files[3]
    return DocumentCodec(MultimodalVocab(text.vocab_size, CODEBOOK, GRID[0] * GRID[1], text.fingerprint), text, GRID)


def _example(index: int, split: str = "train") -> dict:
    """A joined example as `JoinedSource(..., tasks=True)` gives it, with random codes for its images."""
    t = example_tasks(split, index, 0, 32)
    rng = np.random.default_rng(index)
    codes = {k: rng.integers(CODEBOOK, size=GRID) for k in
             ("codes", "edit_codes", "grounding_codes", "edges_codes", "segmentation_codes")}
    return {"caption": t.scene.caption, "caption_short": t.caption_short, "caption_long": t.caption_long,
            "question": t.question, "answer": t.answer,
            "edit_instruction": t.edit_instruction, "grounding_caption": t.grounding_scene.caption,
            "id": t.scene.id, "is_emblem": t.scene.emblem is not None, "index": index, **codes}


def _ordinary(start: int = 0) -> dict:
    return next(e for e in map(_example, range(start, start + 50)) if not e["is_emblem"])


def _words(text: str) -> str:
    return " ".join(text.split())


def _tokens(example: SftExample, codec) -> np.ndarray:
    return np.concatenate([example.prompt, example.output])


def test_every_template_is_the_inference_prompt_then_its_output(codec):
    example = _ordinary()
    rng = np.random.default_rng(0)
    firsts = {
        "text_to_image": prompts.text_to_image(codec, example["caption"], False)[0],
        "caption": prompts.caption(codec, example["codes"])[0],
        "caption_short": prompts.caption(codec, example["codes"], "short")[0],
        "caption_long": prompts.caption(codec, example["codes"], "long")[0],
        "vqa": prompts.answer(codec, example["codes"], example["question"])[0],
        "edit": prompts.edit(codec, example["codes"], example["edit_instruction"], False)[0],
        "grounding": prompts.text_to_image(codec, example["grounding_caption"], False)[0],
    }
    for task, prompt in firsts.items():
        np.testing.assert_array_equal(build(task, example, codec, rng).prompt, prompt, err_msg=task)
    structure = build("structure", example, codec, np.random.default_rng(1))
    candidates = [prompts.structure(codec, example[f"{key}_codes"], kind, example["caption"], False)[0]
                  for kind, key in (("edge", "edges"), ("segmentation", "segmentation"))]
    assert any(np.array_equal(structure.prompt, c) for c in candidates)


def test_every_template_renders_and_parses_back(codec):
    example = _ordinary()
    scene = example_tasks("train", example["index"], 0, 32).scene
    rng = np.random.default_rng(0)
    decoded = {task: codec.decode(_tokens(build(task, example, codec, rng), codec)) for task in SFT_TASKS
               if task not in ("structure", "infill")}

    def image(codes):
        return ImageSegment(np.asarray(codes))

    assert parse(decoded["text_to_image"][0].text) == parse(example["caption"])
    assert decoded["text_to_image"][1] == image(example["codes"])
    assert decoded["caption"][0] == image(example["codes"])
    assert parse(decoded["caption"][1].text) == parse(example["caption"])
    for detail in ("short", "long"):
        drawn, text = decoded[f"caption_{detail}"]
        instruction = prompts.CAPTION_INSTRUCTIONS[detail]
        assert drawn == image(example["codes"]) and _words(text.text).startswith(instruction)
        assert parse(_words(text.text)[len(instruction):]) == describe(scene, detail)
    assert decoded["vqa"][0] == image(example["codes"])
    assert _words(decoded["vqa"][1].text) == _words(f"Question: {example['question']} Answer: {example['answer']}")
    prefix, before, instruction, after = decoded["edit"]
    assert _words(prefix.text) == prompts.EDIT_PREFIX and before == image(example["codes"])
    assert _words(instruction.text) == _words(example["edit_instruction"]) and after == image(example["edit_codes"])
    assert parse(decoded["grounding"][0].text) == parse(example["grounding_caption"])
    assert decoded["grounding"][1] == image(example["grounding_codes"])
    for seed in range(4):
        built = build("structure", example, codec, np.random.default_rng(seed))
        text, the_map, caption, drawn = codec.decode(_tokens(built, codec))
        kind = "edge" if the_map == image(example["edges_codes"]) else "segmentation"
        assert the_map == image(example[f"{kind}s_codes" if kind == "edge" else "segmentation_codes"])
        assert _words(text.text) == prompts.STRUCTURE_PREFIX.format(kind) and drawn == image(example["codes"])
        assert parse(caption.text) == parse(example["caption"])
    document = codec.encode((TextSegment(example["caption"]), ImageSegment(example["codes"])))
    for seed in range(8):
        built = build("infill", example, codec, np.random.default_rng(seed))
        assert built.output[-1] == codec.vocab.eoss_id and 1 <= len(built.output) - 1 <= 4
        np.testing.assert_array_equal(unmask(_tokens(built, codec), codec.vocab), document)


@pytest.mark.parametrize("task", SFT_TASKS)
def test_outputs_only_loss_weights_exactly_the_output_and_eos(codec, task):
    example = build(task, _ordinary(), codec, np.random.default_rng(3))
    outputs = row(example, codec, 512, "outputs")
    whole = row(example, codec, 512, "all")
    np.testing.assert_array_equal(outputs["inputs"], whole["inputs"])
    weighted = outputs["targets"][outputs["weights"] > 0]
    np.testing.assert_array_equal(weighted, np.append(example.output, codec.vocab.eos_id))
    assert np.all(outputs["weights"][:len(example.prompt) - 1] == 0)
    sentinel = is_sentinel(outputs["targets"], codec.vocab)
    np.testing.assert_array_equal(whole["weights"], np.where(sentinel, 0.0, 1.0))
    np.testing.assert_array_equal(whole["inputs"][1:], whole["targets"][:-1])


def test_condition_dropout_gives_the_guidance_streams(codec):
    example = _ordinary()
    t2i = build("text_to_image", example, codec, np.random.default_rng(0), cfg_dropout=1.0)
    np.testing.assert_array_equal(t2i.prompt, prompts.text_to_image(codec, example["caption"], True)[1])
    assert codec.decode(t2i.prompt)[0] == SpecialToken("<mask>")
    streams = prompts.edit(codec, example["codes"], example["edit_instruction"], True)
    seen = set()
    for seed in range(16):
        prompt = build("edit", example, codec, np.random.default_rng(seed), cfg_dropout=1.0).prompt
        seen |= {i for i in (1, 2) if np.array_equal(prompt, streams[i])}
        assert not np.array_equal(prompt, streams[0])
    assert seen == {1, 2}, "editing drops the instruction, or the instruction and the image"
    kept = build("edit", example, codec, np.random.default_rng(0), cfg_dropout=0.0)
    np.testing.assert_array_equal(kept.prompt, streams[0])
    dropped = build("structure", example, codec, np.random.default_rng(0), cfg_dropout=1.0).prompt
    unconditional = [prompts.structure(codec, example["edges_codes"], kind, example["caption"], True)[1]
                     for kind in prompts.STRUCTURE_KINDS]
    assert any(np.array_equal(dropped, u) for u in unconditional), "structure drops the map and the caption"


def test_a_row_longer_than_the_context_is_refused_with_the_fix(codec):
    example = build("edit", _ordinary(), codec, np.random.default_rng(0))
    needed = len(example.prompt) + len(example.output)
    assert row(example, codec, needed)["inputs"].shape == (needed,)
    with pytest.raises(UserError, match=f"edit example takes {needed} tokens, 1 more than train.seq_len = "
                                        f"{needed - 1}; raise train.seq_len"):
        row(example, codec, needed - 1)


def test_the_mixture_draws_by_weight_among_the_tasks_an_example_has(codec):
    mixture = TaskMixture({"edit": 3.0, "vqa": 1.0, "structure": 1.0}, codec, 512)
    ordinary = _ordinary()
    rng = np.random.default_rng(0)
    drawn = [mixture.choose(ordinary, rng) for _ in range(2000)]
    assert abs(drawn.count("edit") / 2000 - 0.6) < 0.04 and abs(drawn.count("vqa") / 2000 - 0.2) < 0.04
    emblem = dict(ordinary, is_emblem=True, edit_instruction="")
    assert {mixture.choose(emblem, rng) for _ in range(50)} == {"vqa"}
    with pytest.raises(UserError, match="No task of data.tasks \\(edit\\) applies"):
        TaskMixture({"edit": 1.0}, codec, 512).choose(emblem, rng)
    a, b = (mixture(ordinary, np.random.default_rng(7)) for _ in range(2))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("weights, message", [
    ({"paint": 1.0}, "data.tasks names \\['paint'\\]"),
    ({"vqa": 0.0}, "positive sum"),
    ({"vqa": -1.0, "edit": 2.0}, "zero or more"),
])
def test_a_bad_mixture_is_refused(codec, weights, message):
    with pytest.raises(UserError, match=message):
        TaskMixture(weights, codec, 256)
    with pytest.raises(UserError, match="data.loss_on is 'inputs'; choose all or outputs"):
        TaskMixture({"vqa": 1.0}, codec, 256, loss_on="inputs")
