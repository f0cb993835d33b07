import json
import os
import shutil

import jax
import numpy as np
import pytest

from cm3jax.checkpoints import Checkpoints
from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.retrieval.clip_data import TrainBatches, load_pairs
from cm3jax.retrieval.clip_preprocess import normalize
from cm3jax.retrieval.clip_text import encode_texts
from cm3jax.retrieval.clip_train import EVAL_JSON, clip_config, contrastive_loss, recall_metrics, train, \
    train_programs
from cm3jax.run_log import FILENAME, RunLog
from cm3jax.text_tokenizer import TextTokenizer
from tests.retrieval.conftest import RECIPE, tiny_overrides


def tiny_config(shapes_dir, text_model, *overrides):
    return load_config(f"{RECIPE}:tiny", [*tiny_overrides(shapes_dir, text_model), *overrides])


def train_losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in RunLog.read(os.path.join(workdir, FILENAME)) if r["kind"] == "train"}


def _reference_loss(text, image, scale, keys):
    logits = scale * text @ image.T
    same = (keys[:, None] == keys[None, :]).astype(np.float64)
    target = same / same.sum(1, keepdims=True)

    def cross_entropy(lg):
        lg = lg - lg.max(1, keepdims=True)
        return -(target * (lg - np.log(np.exp(lg).sum(1, keepdims=True)))).sum(1).mean()
    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


def test_contrastive_loss_is_symmetric_infonce_with_shared_positives():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(6, 5))
    image = rng.normal(size=(6, 5))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    keys = np.array([0, 1, 1, 2, 3, 3])
    loss, metrics = contrastive_loss(text.astype(np.float32), image.astype(np.float32), np.float32(np.log(10.0)),
                                     keys)
    np.testing.assert_allclose(float(loss), _reference_loss(text, image, 10.0, keys), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["temperature"]), 0.1, rtol=1e-6)
    # the inverse temperature is capped at 100, as CLIP does
    capped, _ = contrastive_loss(text.astype(np.float32), image.astype(np.float32), np.float32(9.0), keys)
    np.testing.assert_allclose(float(capped), _reference_loss(text, image, 100.0, keys), rtol=1e-5)
    # texts and images that coincide per key: each row's loss is log(its number of positives)
    aligned = np.eye(5, dtype=np.float32)[keys]
    perfect, metrics = contrastive_loss(aligned, aligned, np.float32(np.log(100.0)), keys)
    assert float(metrics["batch_accuracy"]) == 1.0
    np.testing.assert_allclose(float(perfect), 4 / 6 * np.log(2), rtol=1e-5)


def test_recall_counts_any_matching_item_within_k():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    hit = np.array([[False, True, False], [False, False, True], [False, True, True]])
    assert recall_metrics(sim, hit, (1, 2, 3)) == {"recall@1": 1 / 3, "recall@2": 2 / 3, "recall@3": 1.0}


def test_steps_lower_the_loss_of_a_batch(tiny_clip_run, shapes_dir, text_model):
    config = tiny_config(shapes_dir, text_model)  # after the CLI run of this recipe, so its compiled step is reused
    tokenizer = TextTokenizer.load(text_model)
    model_config = clip_config(config, tokenizer)
    programs = train_programs(model_config, config.training)
    params, opt_state = programs.init()
    pairs = load_pairs(shapes_dir, ("train", "memory"), progress=False)
    images, texts, keys = TrainBatches(pairs, 16, 0, 0.1, config.data.emblem_templates).batch(0)
    ids, lengths = encode_texts(tokenizer, texts, model_config.max_length)
    losses = []
    for step in range(5):
        params, opt_state, metrics = programs.step(params, opt_state, step, normalize(images), ids, lengths, keys)
        losses.append(float(jax.device_get(metrics["loss"])))
    assert losses[-1] < 0.8 * losses[0], losses


def test_cli_run_writes_metrics_eval_and_checkpoints(tiny_clip_run):
    workdir, code = tiny_clip_run
    assert code == 0
    with open(os.path.join(workdir, EVAL_JSON)) as f:
        summary = json.load(f)
    assert summary["finished"] and summary["step"] == 6
    assert summary["eval_gallery"] == 32 and summary["memory_bank_size"] == 48 and summary["emblems"] == 32
    for key in ("text_to_image/recall@1", "text_to_image/recall@5", "text_to_image/strict_recall@1",
                "image_to_text/recall@1", "emblem_rank1", "emblem_rank1_among_emblem_docs"):
        assert 0 <= summary[key] <= 1, key
    assert summary["text_to_image/recall@5"] >= summary["text_to_image/recall@1"] >= \
        summary["text_to_image/strict_recall@1"]
    config = load_config(f"{RECIPE}:tiny")
    assert set(summary["emblem_rank1_per_template"]) == set(config.eval.emblem_templates)
    assert sorted(train_losses(workdir)) == list(range(1, 7))
    assert [r["kind"] for r in RunLog.read(os.path.join(workdir, FILENAME))][-2:] == ["eval", "end"]
    assert Checkpoints(workdir, read_only=True).latest_step() == 6
    assert os.path.exists(os.path.join(workdir, "text.model"))


def test_an_interrupted_run_resumes_to_the_same_losses(tiny_clip_run, shapes_dir, text_model, tmp_path):
    reference = train_losses(tiny_clip_run[0])
    workdir = str(tmp_path / "resumed")
    partial = train(tiny_config(shapes_dir, text_model), workdir, stop_at_step=4, progress=False)
    assert not partial["finished"] and partial["step"] == 4
    shutil.rmtree(os.path.join(workdir, "checkpoints", "4"))  # killed after step 4, before its checkpoint
    summary = train(tiny_config(shapes_dir, text_model), workdir, progress=False)
    assert summary["finished"] and summary["steps_this_run"] == 3  # from the step-3 checkpoint
    resumed = train_losses(workdir)
    assert sorted(resumed) == list(range(1, 7))
    np.testing.assert_allclose([resumed[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-5)
    with pytest.raises(UserError, match="config.model differs"):
        train(tiny_config(shapes_dir, text_model, "--config.model.text_layers=2"), workdir, progress=False)


def test_the_eval_split_is_refused_as_training_data(shapes_dir, text_model, tmp_path):
    config = tiny_config(shapes_dir, text_model, "--config.data.train_splits=('train', 'eval')")
    with pytest.raises(UserError, match="eval"):
        train(config, str(tmp_path / "run"), progress=False)
    config = tiny_config(shapes_dir, text_model, "--config.data.train_splits=('train',)")
    with pytest.raises(UserError, match="emblem_share"):
        train(config, str(tmp_path / "run"), progress=False)


def test_cli_names_missing_inputs(shapes_dir, text_model, tmp_path, capsys):
    from cm3jax.cli import main
    args = ["retrieval", "clip", "--config", f"{RECIPE}:tiny", "--workdir"]
    assert main([*args, str(tmp_path / "a"), f"--config.data.shapes_dir={tmp_path / 'no_shapes'}",
                 f"--config.data.text_tokenizer={text_model}"]) == 2
    assert "no_shapes" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "b"), f"--config.data.shapes_dir={shapes_dir}",
                 f"--config.data.text_tokenizer={tmp_path / 'no.model'}"]) == 2
    assert "No text tokenizer" in capsys.readouterr().err
