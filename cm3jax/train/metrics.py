"""The decoder's training metrics: every step's record to WORKDIR/metrics.jsonl (what the loss
curves and resume checks read), and every `log_every` steps the clu-averaged interval to the
console and, when the `tensorboard` extra (TensorFlow) is installed, to TensorBoard through
clu's writers in WORKDIR/tensorboard."""

# No `from __future__ import annotations`: clu builds the Collection from the real annotations.
import os
from typing import Any

import flax.struct
from clu import metrics as clu_metrics
from tqdm import tqdm

from cm3jax.run_log import RunLog

TENSORBOARD_DIR = "tensorboard"


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    nll: clu_metrics.Average.from_output("nll")
    accuracy: clu_metrics.Average.from_output("accuracy")
    grad_norm: clu_metrics.Average.from_output("grad_norm")
    tokens: clu_metrics.Average.from_output("tokens")
    steps_per_second: clu_metrics.LastValue.from_output("steps_per_second")
    learning_rate: clu_metrics.LastValue.from_output("learning_rate")


def tensorboard_writer(logdir: str):
    """clu's default writer (TensorBoard summaries + absl logging), or None without TensorFlow:
    clu's writers import it unconditionally, hence the import here."""
    try:
        from clu import metric_writers
    except ImportError:
        return None
    return metric_writers.create_default_writer(logdir, asynchronous=True)


class MetricLogger:
    """Writes on the primary process only; other processes keep the records in memory."""

    def __init__(self, workdir: str, resumed_step: int, final_step: int, log_every: int, primary: bool):
        self.log_file = RunLog(workdir, resumed_step, final_step, write=primary)
        self.primary, self.log_every = primary, log_every
        self.interval: TrainMetrics | None = None
        self.writer = tensorboard_writer(os.path.join(workdir, TENSORBOARD_DIR)) if primary else None

    @property
    def records(self) -> list[dict]:
        return self.log_file.records

    def append(self, record: dict[str, Any]) -> dict[str, float] | None:
        """Appends one step's record; returns the interval's averages when an interval closes."""
        self.log_file.append(record)
        single = TrainMetrics.single_from_model_output(**record)
        self.interval = single if self.interval is None else self.interval.merge(single)
        if record["step"] % self.log_every:
            return None
        summary = {k: float(v) for k, v in self.interval.compute().items()}
        summary["tokens_per_second"] = summary.pop("tokens") * summary["steps_per_second"]
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
