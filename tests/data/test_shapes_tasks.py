"""Shapes pretraining documents: shapes_document puts caption and image in either order (the
caption as <mask> under condition dropout), and JoinedSource pairs a made Shapes dataset with its
pretokenized codes, refusing codes of another length or tokenizer; throwaway emblems bring their own
documents, and a tiny model trained on them learns to copy a retrieved image."""

import dataclasses
import functools

import grain.python as grain

import numpy as np
import pytest

from cm3jax.data.pipeline import ObjectiveConfig, document_rows, make_pipeline
from cm3jax.data.shapes_tasks import JoinedSource, ShapesMixture, shapes_document
from cm3jax.documents import DocumentCodec, ImageSegment, SpecialToken, TextSegment
from cm3jax.errors import UserError
from cm3jax.image_tokenizer.pretokenize import pretokenize, tokenizer_fingerprint
from cm3jax.objectives import unmask
from cm3jax.shapes.dataset import WorldSpec, data_source, make, scene_of
from cm3jax.vocab import MultimodalVocab

EXAMPLE = {"caption": "a red circle on a black background", "codes": np.arange(4).reshape(2, 2), "index": 0}
WORLD = WorldSpec(num_train=6, num_eval=3, num_novel=0, num_emblems_unseen=0, num_memory=0)


def _kinds(document):
    return [type(s).__name__ for s in document]


def test_text_to_image_puts_the_caption_first():
    document = shapes_document(EXAMPLE, np.random.default_rng(0), ShapesMixture(image_to_text=0.0, cfg_dropout=0.0))
    assert _kinds(document) == ["TextSegment", "ImageSegment"]
    assert document[0] == TextSegment(EXAMPLE["caption"])
    np.testing.assert_array_equal(document[1].codes, EXAMPLE["codes"])


def test_image_to_text_puts_the_image_first():
    document = shapes_document(EXAMPLE, np.random.default_rng(0), ShapesMixture(image_to_text=1.0, cfg_dropout=1.0))
    assert _kinds(document) == ["ImageSegment", "TextSegment"], "dropout never hides an image -> text caption"
    assert document[1] == TextSegment(EXAMPLE["caption"])


def test_condition_dropout_replaces_the_caption_by_mask(tokenizer_files):
    document = shapes_document(EXAMPLE, np.random.default_rng(0), ShapesMixture(image_to_text=0.0, cfg_dropout=1.0))
    assert document[0] == SpecialToken("<mask>") and isinstance(document[1], ImageSegment)
    text = tokenizer_files[3]
    codec = DocumentCodec(MultimodalVocab(text.vocab_size, 16, 4, text.fingerprint), text, (2, 2))
    mixture = ShapesMixture(image_to_text=0.0, cfg_dropout=1.0)
    for seed in range(5):  # through the pipeline of packed, CM3-masked rows too
        to_row = document_rows(functools.partial(shapes_document, mixture=mixture), codec, ObjectiveConfig(), 64)
        batch = next(iter(make_pipeline(grain.MapDataset.source([EXAMPLE] * 8), to_row, 64, local_batch=2,
                                        seed=seed)))
        for row in range(2):
            segments = batch["segments"][row]
            for segment in set(segments.tolist()) - {0}:
                where = segments == segment
                tokens = np.concatenate([batch["inputs"][row][where], batch["targets"][row][where][-1:]])
                assert unmask(tokens, codec.vocab)[:2].tolist() == [codec.vocab.mask_id, codec.vocab.break_id]


def test_the_mixture_shares_follow_their_probabilities():
    rng = np.random.default_rng(0)
    kinds = [_kinds(shapes_document(EXAMPLE, rng, ShapesMixture(image_to_text=0.5, cfg_dropout=0.2)))[0]
             for _ in range(4000)]
    assert kinds.count("ImageSegment") / 4000 == pytest.approx(0.5, abs=0.03)
    assert kinds.count("SpecialToken") / 4000 == pytest.approx(0.5 * 0.2, abs=0.02)
    same = [_kinds(shapes_document(EXAMPLE, np.random.default_rng(3), ShapesMixture())) for _ in range(3)]
    assert same[0] == same[1] == same[2], "a function of the generator only"


@pytest.fixture(scope="module")
def joined(tmp_path_factory, tokenizer_files):
    """(shapes dir, its codes dir, codes of a smaller world, the tokenizer's fingerprint)."""
    root = tmp_path_factory.mktemp("joined")
    model = tokenizer_files[2]
    shapes, small = str(root / "shapes"), str(root / "small")
    make(shapes, WORLD, workers=1, progress=False)
    make(small, dataclasses.replace(WORLD, num_train=4), workers=1, progress=False)
    pretokenize(shapes, str(root / "codes"), model, batch_size=8, progress=False)
    pretokenize(small, str(root / "small_codes"), model, batch_size=8, progress=False)
    return shapes, str(root / "codes"), str(root / "small_codes"), tokenizer_fingerprint(model)


def test_joined_source_pairs_captions_and_codes_by_index(joined):
    shapes, codes, _, fingerprint = joined
    source = JoinedSource(shapes, codes, "train", fingerprint)
    scenes = data_source(shapes, "train")
    assert len(source) == 6
    for i in range(len(source)):
        example = source[i]
        assert example["index"] == i and example["caption"] == scenes[i]["caption"].decode()
        assert example["codes"].shape == (8, 8) and 0 <= example["codes"].min() and example["codes"].max() < 32
    assert len(JoinedSource(shapes, codes, "eval")) == 3


def test_joined_source_with_tasks_gives_every_instruction_tuning_field(joined):
    shapes, codes, _, fingerprint = joined
    scenes = data_source(shapes, "train")
    source = JoinedSource(shapes, codes, "train", fingerprint, tasks=True)
    for i in range(len(source)):
        example = source[i]
        assert example["question"] == scenes[i]["question"].decode() and example["id"] == scenes[i]["id"].decode()
        assert example["edit_instruction"] == scenes[i]["edit_instruction"].decode()
        assert {example[k].shape for k in ("edit_codes", "grounding_codes", "edges_codes", "segmentation_codes")} \
            == {(8, 8)}
        assert example["is_emblem"] == (scene_of(scenes[i]).emblem is not None)


def test_joined_source_refuses_codes_of_another_length_or_tokenizer(joined):
    shapes, codes, small_codes, fingerprint = joined
    with pytest.raises(UserError, match=f"{shapes} has 6 train scenes but {small_codes} has codes for 4; "
                                        "pretokenize this dataset again"):
        JoinedSource(shapes, small_codes, "train", fingerprint)
    with pytest.raises(UserError, match="were made by another tokenizer"):
        JoinedSource(shapes, codes, "train", "0" * 64)


def test_throwaway_emblems_replace_a_share_of_examples_and_bring_their_own_document():
    from cm3jax.data.shapes_tasks import ThrowawayEmblemMix, throwaway_context
    from cm3jax.shapes.captions import EMBLEM_FORMS
    from cm3jax.shapes.emblems import THROWAWAY_NAMES

    patterns = np.arange(10 * 4).reshape(10, 2, 2)
    mix = ThrowawayEmblemMix(patterns, rate=0.5)
    outs = [mix(dict(EXAMPLE), np.random.default_rng(i)) for i in range(400)]
    invented = [o for o in outs if "documents" in o]
    assert 150 < len(invented) < 250, "about half"
    assert all(o == EXAMPLE for o in outs if "documents" not in o)
    names = set()
    for o in invented:
        assert o["index"] == -1 and len(o["documents"]) == 2
        name = next(n for n in THROWAWAY_NAMES if o["caption"] in {f.format(n) for f in EMBLEM_FORMS})
        names.add(name)
        own = [d for d in o["documents"] if name in d[0]]
        assert len(own) == 1, "its own document, and a distractor with another name"
        np.testing.assert_array_equal(own[0][1], o["codes"])
        other = next(d for d in o["documents"] if name not in d[0])
        assert not np.array_equal(other[1], o["codes"])
    assert len(names) > 100, "names are drawn apart from patterns: nothing to memorise"
    firsts = [o["caption"].split()[-1] in o["documents"][0][0] for o in invented]
    assert 0.3 < np.mean(firsts) < 0.7, "its document comes first or second at random"
    again = [mix(dict(EXAMPLE), np.random.default_rng(i)) for i in range(400)]
    assert [o.get("caption") for o in again] == [o.get("caption") for o in outs], "a function of the rng"
    assert throwaway_context(EXAMPLE, None) is None


def test_throwaway_context_encodes_each_document_as_the_bank_does(tokenizer_files):
    from cm3jax.data.shapes_tasks import ThrowawayEmblemMix, throwaway_context
    from cm3jax.retrieval.bank import SourceDocument, document_tokens

    text = tokenizer_files[3]
    codec = DocumentCodec(MultimodalVocab(text.vocab_size, 16, 64, text.fingerprint), text, (8, 8))
    codes = np.random.default_rng(0).integers(0, 16, size=(3, 8, 8))
    mix = ThrowawayEmblemMix(codes, rate=1.0)
    example = mix(dict(EXAMPLE), np.random.default_rng(1))
    got = throwaway_context(example, codec)
    want = [document_tokens(codec, SourceDocument("doc", t, np.zeros((32, 32, 3), np.uint8), c))
            for t, c in example["documents"]]
    assert len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_throwaway_share_outside_0_to_1_is_refused():
    from cm3jax.data.shapes_tasks import ThrowawayEmblemMix
    with pytest.raises(UserError, match="share of the training examples"):
        ThrowawayEmblemMix(np.zeros((4, 2, 2), int), rate=1.5)


def _copy_rows(examples, codec, length: int, with_documents: bool = True) -> dict:
    """Train rows for throwaway examples: each one's own document (`with_context`, as retrieval
    composes a prompt) before the example, the loss on the example's image codes only."""
    from cm3jax.data.shapes_tasks import throwaway_context
    from cm3jax.sampling.inference import with_context

    vocab, cells = codec.vocab, codec.grid[0] * codec.grid[1]
    batch = {key: np.zeros((len(examples), length), np.int32) for key in ("inputs", "targets", "positions", "segments")}
    batch["weights"] = np.zeros((len(examples), length), np.float32)
    for row, example in enumerate(examples):
        own = [doc for doc, (_, codes) in zip(throwaway_context(example, codec), example["documents"])
               if np.array_equal(codes, example["codes"])]
        query = codec.encode([TextSegment(example["caption"]), ImageSegment(example["codes"])], eos=True)
        ids = with_context((query,), own if with_documents else [], vocab.eos_id, length + 1)[0]
        n = len(ids) - 1
        assert n <= length, n
        batch["inputs"][row, :n], batch["targets"][row, :n] = ids[:-1], ids[1:]
        batch["positions"][row, :n], batch["segments"][row, :n] = np.arange(n), 1
        batch["weights"][row, n - 1 - cells:n - 1] = 1.0  # the targets that are the example's codes
    return batch


def test_a_tiny_model_trained_on_throwaway_examples_copies_the_retrieved_image(tokenizer_files):
    """Patterns drawn afresh for every example leave nothing to memorise: what the model learns
    is to copy its document. Scored on patterns it never saw, teacher-forced, against chance
    (1 in 64 codes) and against the same model given no document."""
    import jax
    from flax import nnx

    from cm3jax.config import decoder_config, decoder_experiment
    from cm3jax.data.shapes_tasks import ThrowawayEmblemMix
    from cm3jax.model.decoder import Decoder
    from cm3jax.sharding import make_mesh, mesh_context
    from cm3jax.train.optimizer import make_optimizer
    from cm3jax.train.step import jit_train_step, loss_and_metrics

    text, codebook, grid, length, steps = tokenizer_files[3], 64, (3, 3), 80, 2500
    codec = DocumentCodec(MultimodalVocab(text.vocab_size, codebook, 9, text.fingerprint), text, grid)
    mix = ThrowawayEmblemMix(np.random.default_rng(0).integers(0, codebook, size=(8192, *grid)), rate=1.0)
    unseen = ThrowawayEmblemMix(np.random.default_rng(1).integers(0, codebook, size=(512, *grid)), rate=1.0)
    config = decoder_experiment(
        dict(vocab_size=codec.vocab.size, d_model=64, n_layers=2, n_heads=4, mlp_hidden=128, max_seq_len=length,
             norm="rmsnorm", mlp="swiglu", positions="rope", qk_norm=False),
        dict(warmup_steps=50, peak_lr=3e-3, z_loss=1e-4))
    graphdef, params = nnx.split(Decoder(decoder_config(config), nnx.Rngs(0)), nnx.Param)
    tx, schedule = make_optimizer(config.train, steps)
    opt_state = tx.init(params)
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    rng = np.random.default_rng(2)
    with mesh_context(mesh):
        step = jit_train_step(graphdef, tx, schedule, params, opt_state, mesh, config.train.z_loss)
        for _ in range(steps):
            params, opt_state, _ = step(params, opt_state, _copy_rows([mix(dict(EXAMPLE), rng) for _ in range(16)],
                                                                   codec, length))
        tests = [unseen(dict(EXAMPLE), np.random.default_rng(100 + i)) for i in range(128)]
        score = jax.jit(loss_and_metrics, static_argnums=(1,))
        copied, alone = (float(score(params, graphdef, _copy_rows(tests, codec, length, with_documents=d), 0.0)[1]
                               ["accuracy"]) for d in (True, False))
    chance = 1 / codebook
    assert copied > 4 * chance and copied > 2.5 * alone, (copied, alone, chance)
