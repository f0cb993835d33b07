"""The decoder training loop end to end on a tiny Shapes world: resume equals uninterrupted,
SIGTERM saves, NaN stops keeping the last good checkpoint, bad checkpoints are refused."""

import copy
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.config import from_json_dict, load_config
from cm3jax.errors import UserError
from cm3jax.train import loop
from cm3jax.train.loop import Stopped, train
from tests.train.conftest import ROOT, tiny_config, tiny_overrides
from cm3jax.vocab import MultimodalVocab

def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _losses(workdir):
    return [r["loss"] for r in _records(workdir)]


def test_a_killed_and_resumed_run_equals_an_uninterrupted_one(world, tmp_path):
    results = train(tiny_config(world), str(tmp_path / "whole"), progress=False)
    assert results["step"] == 6 and (tmp_path / "whole" / "loss.png").exists()
    assert train(tiny_config(world), str(tmp_path / "split"), stop_at_step=3, progress=False)["step"] == 3
    train(tiny_config(world), str(tmp_path / "split"), progress=False)
    np.testing.assert_allclose(_losses(tmp_path / "split"), _losses(tmp_path / "whole"), rtol=1e-6)
    records = _records(tmp_path / "split")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] and {r["kind"] for r in records} == {"train"}
    # the step's own learning rate: warmup_steps=3 to peak_lr=3e-3
    np.testing.assert_allclose([r["learning_rate"] for r in records[:4]], [0.0, 1e-3, 2e-3, 3e-3], rtol=1e-6)


class _Bank:
    """Document i of this stand-in memory bank is i + 1 text tokens, so a row shows which it holds."""

    def __init__(self, vocab: MultimodalVocab):
        self.vocab = vocab

    def tokens(self, row: int) -> np.ndarray:
        return np.asarray(self.vocab.text_ids(np.arange(row + 1)), np.int32)


def _rows_config(no_documents: float):
    from ml_collections import ConfigDict
    return ConfigDict({"data": dict(image_to_text=0.3, cfg_dropout=0.1, cm3_rate=0.0, span_rate=1.0,
                                    retrieved_documents=2, no_documents=no_documents), "train": dict(seq_len=128)})


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_a_share_of_examples_trains_without_its_documents(share):
    from tests.retrieval.bank_fixtures import make_codec
    codec = make_codec()
    rows = {"train": np.array([[0, 1, 2, 3]] * 4, np.int32)}
    to_row = loop._pretraining_rows(_rows_config(share), codec, "train", (_Bank(codec.vocab), rows), None)
    example = {"caption": "a red circle in the top left", "codes": np.zeros((2, 2), np.int32), "index": 1}
    rng = np.random.default_rng(0)
    documents = [int((to_row(example, rng)["inputs"] == codec.vocab.eos_id).sum()) for _ in range(400)]
    assert set(documents) <= {0, 2}
    alone = documents.count(0) / len(documents)
    assert abs(alone - share) < 0.08, (alone, share)


def test_a_no_documents_share_outside_0_to_1_is_refused():
    with pytest.raises(UserError, match="data.no_documents is a share"):
        loop._pretraining_rows(_rows_config(1.5), None, "train", None, None)


def test_a_sequence_longer_than_the_model_is_refused(tmp_path):
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test", ["--config.train.seq_len=256"])
    with pytest.raises(UserError, match=r"train.seq_len=256 exceeds model.max_seq_len=128.*Lower train.seq_len "
                                        r"or raise model.max_seq_len to at least 256"):
        train(config, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists(), "refused before anything is written"


def test_image_positions_other_than_the_tokenizers_are_refused(world, tmp_path):
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test",
                         tiny_overrides(world) + ["--config.model.image_positions=16"])
    with pytest.raises(UserError, match="image tokenizer makes 64 tokens per image; set it to 64"):
        train(config, str(tmp_path / "run"), progress=False)


def test_training_copies_the_codebook_into_the_model_and_never_changes_it(world, tmp_path):
    from cm3jax.image_tokenizer.codebook import codebook_features
    from cm3jax.sampling.inference import TrainedDecoder
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test",
                         tiny_overrides(world) + ["--config.model.image_code_features=8",
                                                  "--config.model.image_code_source=codebook"])
    train(config, str(tmp_path / "run"), progress=False)
    trained = TrainedDecoder.load(str(tmp_path / "run"))
    assert trained.step == 6
    np.testing.assert_array_equal(np.asarray(trained.model.image_codes[...]),
                                  codebook_features(trained.image_model.quantize.embedding[...]))


def test_training_copies_what_each_code_draws_into_the_model(world, tmp_path):
    from cm3jax.image_tokenizer.codebook import pixel_features
    from cm3jax.image_tokenizer.codec import code_looks
    from cm3jax.sampling.inference import TrainedDecoder
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test", tiny_overrides(world) + [
        "--config.model.image_code_features=64", "--config.model.image_code_source=pixels"])
    train(config, str(tmp_path / "run"), progress=False)
    trained = TrainedDecoder.load(str(tmp_path / "run"))
    np.testing.assert_array_equal(np.asarray(trained.model.image_codes[...]),
                                  pixel_features(code_looks(trained.image_model)))


def test_training_copies_each_codes_shapes_factors_into_the_model(world, tmp_path):
    from cm3jax.image_tokenizer.codebook import FACTOR_FEATURES, code_factors
    from cm3jax.image_tokenizer.codec import encode_images
    from cm3jax.sampling.inference import TrainedDecoder
    from cm3jax.shapes.emblems import EMBLEM_NAMES, render_emblem
    from cm3jax.train.loop import factor_images
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test", tiny_overrides(world) + [
        f"--config.model.image_code_features={FACTOR_FEATURES}", "--config.model.image_code_source=factors"])
    train(config, str(tmp_path / "run"), progress=False)
    trained = TrainedDecoder.load(str(tmp_path / "run"))
    images = factor_images(config, trained.image_model)
    unseen = {render_emblem(name).tobytes() for name in EMBLEM_NAMES[16:]}
    assert not unseen & {image.tobytes() for image in images}, "no held-out emblem says what a code encodes"
    want = code_factors(images, encode_images(trained.image_model, images), trained.image_model.config.codebook_size)
    assert want.sum() > 0
    np.testing.assert_array_equal(np.asarray(trained.model.image_codes[...]), want)


@pytest.mark.parametrize("source, width", [("codebook", 8), ("pixels", 64), ("factors", 364)])
def test_image_code_features_other_than_the_code_vectors_are_refused(world, tmp_path, source, width):
    config = load_config(f"{ROOT}/experiments/shapes_tiny.py:test", tiny_overrides(world) + [
        "--config.model.image_code_features=16", f"--config.model.image_code_source={source}"])
    with pytest.raises(UserError, match=f"'{source}'\\) have {width} dimensions; set it to {width}"):
        train(config, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_saved_before_a_model_switch_existed_resumes(world, tmp_path):
    """A key that a saved config lacks counts as its default; a changed value is still refused."""
    workdir = str(tmp_path / "run")
    assert train(tiny_config(world), workdir, stop_at_step=2, progress=False)["step"] == 2
    with Checkpoints(workdir, read_only=True) as store:
        saved = store.restore(2, {"config": Json(), "vocab": Json()})
    current, vocab = from_json_dict(copy.deepcopy(saved["config"])), MultimodalVocab.from_json(saved["vocab"])
    assert current.model.swin_norm is False
    del saved["config"]["model"]["swin_norm"]
    loop._check_resumable(saved, current, vocab, workdir)
    saved["config"]["model"]["d_model"] = 64
    with pytest.raises(UserError, match=r"other model settings \(d_model\)"):
        loop._check_resumable(saved, current, vocab, workdir)


def test_shapes_eval_loss_falls(world, tmp_path):
    barely_trained = train(tiny_config(world, steps=4), str(tmp_path / "short"), progress=False)["eval_nll"]
    trained = train(tiny_config(world, steps=60), str(tmp_path / "long"), progress=False)["eval_nll"]
    assert trained < 0.8 * barely_trained, (barely_trained, trained)


def test_sigterm_saves_a_checkpoint_and_stops(world, tmp_path, monkeypatch):
    real = loop.global_batch
    calls = []

    def batch_then_sigterm(local, mesh):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(local, mesh)
    monkeypatch.setattr(loop, "global_batch", batch_then_sigterm)
    with pytest.raises(Stopped, match="SIGTERM at step 3"):
        train(tiny_config(world, steps=20), str(tmp_path / "run"), progress=False)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints"))[-1] == "3"


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(world, tmp_path, monkeypatch):
    real = loop.global_batch
    calls = []

    def poisoned_at_step_3(local, mesh):
        calls.append(1)
        if len(calls) == 3:
            local = dict(local, weights=np.full_like(local["weights"], np.nan))
        return real(local, mesh)
    monkeypatch.setattr(loop, "global_batch", poisoned_at_step_3)
    with pytest.raises(UserError, match=r"loss became nan at step 3.*last good checkpoint \(step 2\)"):
        train(tiny_config(world), str(tmp_path / "run"), progress=False)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]


def test_corrupt_or_incompatible_checkpoints_are_refused(world, tmp_path):
    train(tiny_config(world), str(tmp_path / "run"), stop_at_step=2, progress=False)
    other = tiny_config(world)
    other.model.d_model = 48
    with pytest.raises(UserError, match="other model settings.*d_model"):
        train(other, str(tmp_path / "run"), progress=False)
    for path in (tmp_path / "run" / "checkpoints" / "2").rglob("*"):
        if path.is_file() and "params" in str(path) and path.stat().st_size > 100:
            path.write_bytes(b"\0" * 16)
    with pytest.raises(UserError, match="corrupt"):
        train(tiny_config(world), str(tmp_path / "run"), progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(world, workdir, stop_at):
    """Runs the training command as two jax.distributed processes (gloo on 127.0.0.1),
    two CPU devices each, and returns their RESULT lines."""
    coordinator = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    args = [f"{ROOT}/experiments/shapes_tiny.py:test", str(workdir), coordinator]
    overrides = json.dumps(tiny_overrides(world, steps=4))
    procs = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("two_process_worker.py")), *args,
                               str(i), str(stop_at), overrides], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:]) for out, _ in outputs]


def test_two_processes_train_save_and_restore(world, tmp_path):
    first = _two_processes(world, tmp_path / "run", stop_at=2)
    assert [r["step"] for r in first] == [2, 2] and first[0]["loss"] == first[1]["loss"]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
    second = _two_processes(world, tmp_path / "run", stop_at=4)
    assert [r["step"] for r in second] == [4, 4]
    assert [json.loads(l)["step"] for l in open(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
