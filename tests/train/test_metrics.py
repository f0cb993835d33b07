import importlib.util
import json

import numpy as np
import pytest

from cm3jax.run_log import FILENAME
from cm3jax.train.metrics import TENSORBOARD_DIR, MetricLogger


def record(step: int) -> dict:
    return {"kind": "train", "step": step, "loss": float(step), "nll": 2.0 * step, "accuracy": 0.1 * step,
            "grad_norm": 1.0, "tokens": 100.0 + step, "steps_per_second": 10.0 + step, "learning_rate": 1e-3 * step}


def test_every_step_is_recorded_and_intervals_are_averaged(tmp_path, capsys):
    logger = MetricLogger(str(tmp_path), 0, 6, log_every=3, primary=True)
    summaries = [logger.append(record(step)) for step in range(1, 7)]
    logger.close()
    assert summaries[0] is None and summaries[1] is None and summaries[3] is None
    assert summaries[2]["loss"] == pytest.approx(np.mean([1, 2, 3]))
    assert summaries[5]["nll"] == pytest.approx(2 * np.mean([4, 5, 6]))
    assert summaries[5]["learning_rate"] == pytest.approx(6e-3) and summaries[5]["steps_per_second"] == 16.0
    assert summaries[5]["tokens_per_second"] == pytest.approx(np.mean([104, 105, 106]) * 16.0)
    lines = [json.loads(line) for line in open(tmp_path / FILENAME)]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6] and lines[4] == record(5)
    if importlib.util.find_spec("tensorflow") is None:
        assert "step 6: loss 5" in capsys.readouterr().out, "without TensorFlow the interval goes to the console"
        assert not (tmp_path / TENSORBOARD_DIR).exists()
    else:
        assert (tmp_path / TENSORBOARD_DIR).is_dir()


def test_a_resumed_run_cuts_the_log_at_its_checkpoint(tmp_path):
    logger = MetricLogger(str(tmp_path), 0, 6, log_every=10, primary=True)
    for step in range(1, 7):
        logger.append(record(step))
    resumed = MetricLogger(str(tmp_path), 4, 6, log_every=10, primary=True)
    assert [r["step"] for r in resumed.records] == [1, 2, 3, 4]
    assert [json.loads(line)["step"] for line in open(tmp_path / FILENAME)] == [1, 2, 3, 4]


def test_only_the_primary_process_writes(tmp_path):
    logger = MetricLogger(str(tmp_path), 0, 6, log_every=1, primary=False)
    logger.append(record(1))
    assert logger.records == [record(1)] and not (tmp_path / FILENAME).exists()
