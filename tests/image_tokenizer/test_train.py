import json
import os
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.image_tokenizer import checkpoints
from cm3jax.image_tokenizer.codebook import code_histogram, restart_dead_codes
from cm3jax.image_tokenizer.data import render_split
from cm3jax.image_tokenizer.losses import (PatchDiscriminator, discriminator_hinge_loss, margin_loss,
                                           reconstruction_loss)
from cm3jax.run_log import FILENAME, RunLog
from cm3jax.image_tokenizer.step import make_key, train_programs
from cm3jax.image_tokenizer.train import LOSS_CURVES_PNG, RECONSTRUCTIONS_PNG, decode_codes, encode_images, \
    load_tokenizer, train
from flax import nnx

RECIPE = str(Path(__file__).resolve().parents[2] / "tokenizers" / "vqgan_shapes.py")


def tiny_config(*overrides: str):
    return load_config(f"{RECIPE}:tiny", overrides)


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
    assert checkpoints.latest_step(workdir) == 30


def test_an_interrupted_run_resumes_to_the_same_losses(tiny_run, tmp_path):
    reference = train_losses(tiny_run[0])
    workdir = str(tmp_path / "resumed")
    partial = train(tiny_config(), workdir, stop_at_step=13, progress=False)
    assert not partial["finished"] and checkpoints.latest_step(workdir) == 13
    # A crash after step 13 but before its checkpoint: the run must continue from step 10.
    shutil.rmtree(os.path.join(checkpoints.checkpoint_dir(workdir), "13"))
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


def test_dead_codes_are_restarted_on_poorly_represented_vectors():
    clusters_CD = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z_ND = jnp.repeat(clusters_CD, 8, axis=0) + 0.01 * jax.random.normal(jax.random.key(0), (24, 2))
    embedding_KD = jnp.array([[0.0, 0.0], [-50.0, -50.0], [-60.0, -50.0], [-50.0, -60.0]])
    nearest = lambda e: jnp.argmin(jnp.sum((z_ND[:, None] - e[None]) ** 2, -1), -1)
    codes_N = nearest(embedding_KD)
    assert set(np.asarray(codes_N).tolist()) == {0}
    age_K = jnp.zeros(4, jnp.int32)
    restarted_per_step = []
    for step in range(8):
        codes_N = nearest(embedding_KD)
        error_N = jnp.sum((z_ND - embedding_KD[codes_N]) ** 2, -1)
        embedding_KD, age_K, restarted = restart_dead_codes(embedding_KD, age_K, code_histogram(codes_N, 4), z_ND,
                                                            error_N, jax.random.fold_in(jax.random.key(1), step), 2)
        restarted_per_step.append(int(np.sum(restarted)))
    assert restarted_per_step[:2] == [0, 3], "unused codes restart once they are restart_after_steps old"
    error_before_N = jnp.sum((z_ND - embedding_KD[0]) ** 2, -1)
    error_after_N = jnp.sum((z_ND - embedding_KD[nearest(embedding_KD)]) ** 2, -1)
    assert float(jnp.mean(error_after_N)) < 0.5 * float(jnp.mean(error_before_N)), "restarts cut the error"
    distance_to_well_represented_K = jnp.linalg.norm(embedding_KD[1:] - clusters_CD[0], axis=-1)
    assert bool(jnp.all(distance_to_well_represented_K > 5.0)), \
        "restarts go to the vectors the codebook represents worst, not to the well-represented cluster"


def test_training_revives_the_codebook(tiny_run):
    records = [r for r in RunLog.read(os.path.join(tiny_run[0], FILENAME)) if r["kind"] == "train"]
    assert records[0]["restarted_codes"] > 0, "the never-used codes are seeded from the first batch"
    assert tiny_run[1]["eval/code_usage"] > 0.5


def test_discriminator_step_gives_finite_losses_and_trains_the_critic():
    config = tiny_config("--config.training.discriminator.enabled=True")
    programs = train_programs(config)
    state, opt_state = programs.init()
    critic_before = jax.tree.map(np.asarray, state["discriminator"])
    _, images = render_split("train", 8, 0, 32, progress=False)
    adversarial_step = programs.steps[True]
    for step in range(2):  # the warmup's learning rate is zero at step 0
        state, opt_state, metrics = adversarial_step(state, opt_state, images, make_key(step))
    for key in ("loss", "generator_adversarial", "discriminator", "margin"):
        assert np.isfinite(float(metrics[key])), key
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), critic_before, state["discriminator"])
    assert any(jax.tree.leaves(changed))


def test_patch_discriminator_and_losses():
    critic = PatchDiscriminator(3, 8, 2, rngs=nnx.Rngs(0))
    logits = critic(jnp.zeros((2, 32, 32, 3)))
    assert logits.shape[0] == 2 and logits.shape[-1] == 1 and logits.ndim == 4
    assert float(discriminator_hinge_loss(jnp.full(4, 2.0), jnp.full(4, -2.0))) == 0.0
    assert float(discriminator_hinge_loss(jnp.zeros(4), jnp.zeros(4))) == 1.0
    target = jnp.zeros((1, 2, 2, 3))
    near, far = target.at[..., 0].set(0.1), target.at[..., 0].set(0.5)
    assert float(margin_loss(near, target, 0.2)) == 0.0
    assert float(margin_loss(far, target, 0.2)) == pytest.approx(0.09, rel=1e-4)
    total, terms = reconstruction_loss(far, target, 1.0, 1.0, 10.0, 0.2)
    assert float(total) == pytest.approx(float(terms["l1"] + terms["l2"] + 10 * terms["margin"]))


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


def test_load_tokenizer_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nothing")):
        load_tokenizer(str(tmp_path / "nothing"))
    os.makedirs(checkpoints.checkpoint_dir(str(tmp_path / "empty")))
    with pytest.raises(UserError, match="No complete tokenizer checkpoint"):
        load_tokenizer(str(tmp_path / "empty"))


def test_load_tokenizer_names_a_corrupt_checkpoint(tiny_run, tmp_path):
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(tiny_run[0], workdir)
    step_dir = os.path.join(checkpoints.checkpoint_dir(workdir), "30")
    params_dir = os.path.join(step_dir, "params")
    for root, _, files in os.walk(params_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(UserError, match=f"{re.escape(step_dir)}.*corrupt"):
        load_tokenizer(workdir)
    with open(os.path.join(step_dir, "config", "metadata"), "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match="unreadable"):
        load_tokenizer(workdir)


def test_batch_must_split_over_the_devices(tmp_path):
    if jax.device_count() == 1:
        pytest.skip("any batch splits over one device")
    with pytest.raises(UserError, match="multiple of the"):
        train(tiny_config(f"--config.training.batch_size={jax.device_count() + 1}"), str(tmp_path), progress=False)


def test_config_round_trips_through_the_checkpoint(tiny_run):
    mngr = checkpoints.manager(tiny_run[0], read_only=True)
    try:
        saved = checkpoints.restore_config(mngr, 30)
    finally:
        mngr.close()
    assert json.loads(saved.to_json()) == json.loads(tiny_config().to_json())


def test_ema_entries_follow_the_mean_of_their_vectors():
    from cm3jax.image_tokenizer.codebook import ema_entries, ema_update
    previous_KD = jnp.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])
    count_K, sum_KD = jnp.full(3, 0.5), 0.5 * previous_KD
    z_ND = jnp.array([[1.0, 2.0], [3.0, 4.0], [6.0, 6.0]])
    codes_N = jnp.array([0, 0, 1])  # code 2 unused this batch
    count_K, sum_KD = ema_update(count_K, sum_KD, codes_N, z_ND, decay=0.5)
    np.testing.assert_allclose(count_K, [0.25 + 1.0, 0.25 + 0.5, 0.25])
    entries = ema_entries(count_K, sum_KD, previous_KD)
    np.testing.assert_allclose(entries[0], (0.25 * previous_KD[0] + 0.5 * (z_ND[0] + z_ND[1])) / 1.25, rtol=1e-6)
    np.testing.assert_allclose(entries[1], (0.25 * previous_KD[1] + 0.5 * z_ND[2]) / 0.75, rtol=1e-6)
    np.testing.assert_allclose(entries[2], previous_KD[2], rtol=1e-6, err_msg="an unused entry keeps its place")
    assert np.array_equal(ema_entries(jnp.zeros(3), sum_KD, previous_KD), previous_KD)
