"""Training metrics: every step's record to WORKDIR/metrics.jsonl (what the loss curves and
resume checks read), and every `log_every` steps the clu-averaged interval to the console
and, when the `tensorboard` extra (TensorFlow) is installed, to TensorBoard through clu's
writers in WORKDIR/tensorboard."""

# No `from __future__ import annotations`: clu builds the Collection from the real annotations.
import json
import os
from typing import Any

import flax.struct
from clu import metrics as clu_metrics
from tqdm import tqdm

from cm3jax.fileio import atomic_write_text

FILENAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    nll: clu_metrics.Average.from_output("nll")
    accuracy: clu_metrics.Average.from_output("accuracy")
    grad_norm: clu_metrics.Average.from_output("grad_norm")
    tokens_per_second: clu_metrics.LastValue.from_output("tokens_per_second")
    learning_rate: clu_metrics.LastValue.from_output("lr")


def tensorboard_writer(logdir: str):
    """clu's default writer (TensorBoard summaries + absl logging), or None without TensorFlow:
    clu's writers import it unconditionally."""
    try:
        from clu import metric_writers
    except ImportError:
        return None
    return metric_writers.create_default_writer(logdir, asynchronous=True)


class MetricLogger:
    """Writes on the primary process only; other processes keep the records in memory."""

    def __init__(self, workdir: str, resumed_step: int, log_every: int, primary: bool):
        self.path = os.path.join(workdir, FILENAME)
        self.primary, self.log_every = primary, log_every
        self.records = self._read(resumed_step)
        self.interval: TrainMetrics | None = None
        self.writer = tensorboard_writer(os.path.join(workdir, TENSORBOARD_DIR)) if primary else None

    def _read(self, up_to_step: int) -> list[dict]:
        """The log of earlier sessions of this run, cut at the resumed step (later lines were
        written after the checkpoint and are replayed now); the file is rewritten to match."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        records = [r for r in records if r["step"] <= up_to_step]
        if self.primary:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def log(self, record: dict[str, Any]) -> dict[str, float] | None:
        """Appends one step's record; returns the interval's averages when an interval closes."""
        self.records.append(record)
        if self.primary:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        single = TrainMetrics.single_from_model_output(**record)
        self.interval = single if self.interval is None else self.interval.merge(single)
        if record["step"] % self.log_every:
            return None
        summary = {k: float(v) for k, v in self.interval.compute().items()}
        self.interval = None
        if self.primary:
            if self.writer is not None:
                self.writer.write_scalars(record["step"], summary)
            else:
                tqdm.write(f"step {record['step']}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
        return summary

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
