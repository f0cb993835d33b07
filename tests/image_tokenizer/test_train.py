import os
import shutil

import jax
import numpy as np
import pytest

from cm3jax.checkpoints import checkpoint_dir
from cm3jax.errors import UserError
from cm3jax.image_tokenizer import checkpoints
from cm3jax.image_tokenizer.data import render_split
from cm3jax.image_tokenizer.train import LOSS_CURVES_PNG, RECONSTRUCTIONS_PNG, decode_codes, encode_images, \
    load_tokenizer, train
from cm3jax.run_log import FILENAME, RunLog
from tests.image_tokenizer.conftest import tiny_config


def train_losses(workdir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in RunLog.read(os.path.join(workdir, FILENAME)) if r["kind"] == "train"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("tiny_run"))
    return workdir, train(tiny_config(), workdir, progress=False)


def test_tiny_training_lowers_the_loss_and_writes_its_report(tiny_run):
    workdir, summary = tiny_run
    assert summary["finished"] and summary["step"] == 30
    losses = [loss for _, loss in sorted(train_losses(workdir).items())]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    for name in (RECONSTRUCTIONS_PNG, LOSS_CURVES_PNG, FILENAME):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    assert 0 <= summary["eval/exact_match"] <= 1 and summary["eval/num_scenes"] == 16
    assert 0 < summary["eval/code_usage"] <= 1 and summary["eval/perplexity"] >= 1
    assert summary["eval/code_bits_given_patch"] >= 0.0
    assert checkpoints.latest_step(workdir) == 30


def test_an_interrupted_run_resumes_to_the_same_losses(tiny_run, tmp_path):
    reference = train_losses(tiny_run[0])
    workdir = str(tmp_path / "resumed")
    partial = train(tiny_config(), workdir, stop_at_step=13, progress=False)
    assert not partial["finished"] and checkpoints.latest_step(workdir) == 13
    # A crash after step 13 but before its checkpoint: the run must continue from step 10.
    shutil.rmtree(os.path.join(checkpoint_dir(workdir), "13"))
    assert checkpoints.latest_step(workdir) == 10
    summary = train(tiny_config(), workdir, progress=False)
    assert summary["finished"] and summary["steps_this_run"] == 20
    resumed = train_losses(workdir)
    assert sorted(resumed) == sorted(reference) == list(range(1, 31))
    np.testing.assert_allclose([resumed[s] for s in range(1, 31)], [reference[s] for s in range(1, 31)],
                               rtol=0, atol=1e-6)


def test_a_resume_with_another_model_is_refused(tiny_run, tmp_path):
    workdir = str(tmp_path / "other")
    shutil.copytree(tiny_run[0], workdir)
    with pytest.raises(UserError, match="config.model differs"):
        train(tiny_config("--config.model.codebook_size=64"), workdir, progress=False)


def test_training_revives_the_codebook(tiny_run):
    records = [r for r in RunLog.read(os.path.join(tiny_run[0], FILENAME)) if r["kind"] == "train"]
    assert records[0]["restarted_codes"] > 0, "the never-used codes are seeded from the first batch"
    assert tiny_run[1]["eval/code_usage"] > 0.5


def test_encode_and_decode_helpers(tiny_run):
    model, config = load_tokenizer(tiny_run[0])
    assert config.model.codebook_size == 32
    _, images = render_split("eval", 5, 0, 32, progress=False)
    codes = encode_images(model, images)
    assert codes.shape == (5, 8, 8) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 32
    decoded = decode_codes(model, codes)
    assert decoded.shape == (5, 32, 32, 3) and decoded.dtype == np.uint8
    assert np.array_equal(encode_images(model, images[:2]), codes[:2]), "batching must not change codes"
    with pytest.raises(UserError, match="uint8"):
        encode_images(model, images.astype(np.float32))
    with pytest.raises(UserError, match=r"\[0, 32\)"):
        decode_codes(model, np.full((1, 8, 8), 32))


def test_batch_must_split_over_the_devices(tmp_path):
    if jax.device_count() == 1:
        pytest.skip("any batch splits over one device")
    with pytest.raises(UserError, match="multiple of the"):
        train(tiny_config(f"--config.training.batch_size={jax.device_count() + 1}"), str(tmp_path), progress=False)
