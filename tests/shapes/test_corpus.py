"""shapes_corpus: every text of the Shapes tasks for N training scenes plus the memory bank,
the same on every call, with captions, questions and every emblem's name in it."""

from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.shapes.dataset import make_example
from cm3jax.shapes.emblems import EMBLEM_NAMES


def test_deterministic_and_seeded():
    assert shapes_corpus(30) == shapes_corpus(30)
    assert shapes_corpus(30, seed=1) != shapes_corpus(30)


def test_holds_every_text_of_the_training_scenes():
    corpus = shapes_corpus(30)
    example = make_example("train", 0, 0, 32)
    for key in ("caption", "caption_short", "caption_long", "question", "answer", "edit_instruction",
                "grounding_caption"):
        assert example[key] and example[key] in corpus, key
    assert corpus[:3] == [example["caption"], example["caption_short"], example["caption_long"]]
    assert any(line.endswith("?") for line in corpus), "questions"
    assert all(isinstance(line, str) and line for line in corpus), "no empty lines (emblems have no edit)"


def test_holds_every_emblem_name_even_for_few_scenes():
    corpus = shapes_corpus(10)
    text = "\n".join(corpus)
    assert all(name in text for name in EMBLEM_NAMES)
    assert len({make_example("memory", i, 0, 32)["caption"] for i in range(len(EMBLEM_NAMES))}) == 32
    assert len(shapes_corpus(20)) > len(corpus)
