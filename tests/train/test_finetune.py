"""Instruction tuning end to end on the tiny world: it starts from the base checkpoint's weights,
resumes exactly, lowers the loss on every task, and `edit` on the tuned model guides with three
streams (at scale 1, exactly the unguided edit)."""

import functools

import grain.python as grain
import jax
import numpy as np
import pytest
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.config import load_config
from cm3jax.data.pipeline import make_pipeline
from cm3jax.data.shapes_tasks import JoinedSource
from cm3jax.data.sft import SFT_TASKS, TaskMixture
from cm3jax.errors import UserError
from cm3jax import prompts
from cm3jax.sampling import inference
from cm3jax.sampling.inference import TrainedDecoder
from cm3jax.sampling.sampler import generate
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.shapes.dataset import data_source
from cm3jax.train.finetune import finetune_config
from cm3jax.train.loop import train
from cm3jax.train.step import loss_and_metrics
from tests.train.conftest import ROOT, tiny_config

SFT = f"{ROOT}/experiments/shapes_sft.py:test"


@pytest.fixture(scope="module")
def base(world, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("base") / "decoder")
    train(tiny_config(world, steps=30, warmup_steps=5), workdir, progress=False)
    return workdir


def _tuning(base_workdir, **train):
    return finetune_config(load_config(SFT, [f"--config.train.{k}={v}" for k, v in train.items()]), base_workdir)


def _params(workdir):
    return nnx.state(TrainedDecoder.load(workdir).model, nnx.Param)


def test_the_tuned_run_is_the_base_model_with_the_tuning_config(base):
    config = _tuning(base)
    assert config.finetune.step == 30 and config.finetune["from"].endswith("decoder")
    assert config.data.tasks.edit > 0 and config.model.max_seq_len == 256 and config.train.seq_len == 256
    assert config.model.d_model == 32, "the model is the base checkpoint's"
    with Checkpoints(base, read_only=True) as checkpoints:
        saved = checkpoints.restore(30, {"config": Json()})["config"]
    assert config.data.shapes_dir == saved["data"]["shapes_dir"] and config.data.image_to_text == 0.3


def test_tuning_starts_from_the_base_weights_and_resumes_exactly(base, tmp_path):
    still = _tuning(base, peak_lr=0.0)
    train(still, str(tmp_path / "still"), progress=False)
    tuned, start = _params(str(tmp_path / "still")), _params(base)
    jax.tree.map(np.testing.assert_array_equal, tuned, start)
    whole = train(_tuning(base), str(tmp_path / "whole"), progress=False)
    assert train(_tuning(base), str(tmp_path / "split"), stop_at_step=3, progress=False)["step"] == 3
    split = train(_tuning(base), str(tmp_path / "split"), progress=False)
    assert whole["step"] == split["step"] == 6
    np.testing.assert_allclose(split["eval_nll"], whole["eval_nll"], rtol=1e-6)
    a, b = _params(str(tmp_path / "whole")), _params(str(tmp_path / "split"))
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), a, b)


def _task_loss(workdir, task: str) -> float:
    """Next-token loss on the outputs of one batch of the eval split's `task` rows."""
    trained = TrainedDecoder.load(workdir)
    config = trained.config
    source = grain.MapDataset.source(JoinedSource(config.data.shapes_dir, config.data.codes_dir, "eval",
                                                  trained.vocab.image_fingerprint, tasks=True))
    rows = TaskMixture({task: 1.0}, trained.codec, 256, "outputs")
    batch = next(iter(make_pipeline(source, rows, 256, local_batch=8, seed=5, repeat=True)))
    graphdef, params = nnx.split(trained.model, nnx.Param)
    return float(loss_and_metrics(params, graphdef, batch, 0.0)[1]["nll"])


def test_a_few_tuning_steps_lower_the_loss_on_every_task(base, tmp_path):
    tuned = str(tmp_path / "tuned")
    train(_tuning(base, steps=50, warmup_steps=5, peak_lr=3e-3, batch_size=8), tuned, progress=False)
    losses = {task: (_task_loss(base, task), _task_loss(tuned, task)) for task in SFT_TASKS}
    assert all(after < 0.95 * before for before, after in losses.values()), losses


def test_edit_on_a_tuned_model_guides_with_three_streams_and_scale_1_is_unguided(base, tmp_path, monkeypatch, world):
    tuned = str(tmp_path / "tuned")
    train(_tuning(base), tuned, progress=False)
    trained = TrainedDecoder.load(tuned)
    scene = data_source(str(world / "shapes"), "eval")[0]
    image, instruction = scene["image"], scene["edit_instruction"].decode()
    seen = []
    real = inference.generate

    def spy(model, vocab, requests, settings, *args, **kwargs):
        seen.append(len(requests[0]))
        return real(model, vocab, requests, settings, *args, **kwargs)

    monkeypatch.setattr(inference, "generate", spy)
    trained.edit(image, instruction, SamplingSettings(strategy="greedy", image_scale=1.5, text_scale=7.5))
    assert seen == [3]
    codes = trained.encode_image(image)
    three = prompts.edit(trained.codec, codes, instruction, True)
    plain = generate(trained.model, trained.vocab, [three[:1]], SamplingSettings(strategy="greedy"),
                     trained.vocab.image_tokens, until="image")
    at_one = generate(trained.model, trained.vocab, [three],
                      SamplingSettings(strategy="greedy", image_scale=1.0, text_scale=1.0),
                      trained.vocab.image_tokens, until="image")
    np.testing.assert_array_equal(at_one.sample(0), plain.sample(0))
    guided = generate(trained.model, trained.vocab, [three],
                      SamplingSettings(strategy="greedy", image_scale=1.5, text_scale=7.5),
                      trained.vocab.image_tokens, until="image")
    assert guided.sample(0).shape == plain.sample(0).shape


def test_a_bad_tuning_config_is_refused(base, world):
    config = load_config(SFT)
    with pytest.raises(UserError, match="model.d_model cannot change"):
        with config.unlocked():
            config.model.d_model = 64
        finetune_config(config, base)
    no_tasks = load_config(SFT)
    with no_tasks.unlocked():
        del no_tasks.data["tasks"]
    with pytest.raises(UserError, match="has no data.tasks"):
        finetune_config(no_tasks, base)
    with pytest.raises(UserError, match="No checkpoints in"):
        finetune_config(load_config(SFT), str(world / "nowhere"))
