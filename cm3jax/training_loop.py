"""The training loop of every trainer (VQ-GAN, CLIP, decoder); each supplies only its step.

The step's metrics stay on the device and are fetched every `log_every` steps, before each
checkpoint and at the end, so the host does not wait for the device every step. A fetched
non-finite loss stops the run with the last good checkpoint kept: no checkpoint is written
before the metrics of the steps it covers are checked. SIGTERM and Ctrl-C are honoured
between steps: the loop checks the metrics, saves and raises `Stopped` (Ctrl-C:
KeyboardInterrupt); a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from typing import Any, Callable, TypeVar

import jax
from tqdm import tqdm

from cm3jax.errors import UserError

State = TypeVar("State")
Metrics = dict[str, jax.Array]


class Stopped(Exception):
    """SIGTERM arrived; a checkpoint was saved."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    total_steps: int  # the run's length
    log_every: int
    checkpoint_every: int
    stop_at_step: int | None = None  # end this invocation there (saved), as a time-sliced job would
    divergence_fix: str = "Lower the learning rate, then run the command again."  # names the recipe's keys

    def end(self) -> int:
        return self.total_steps if self.stop_at_step is None else min(self.stop_at_step, self.total_steps)


def run(state: State, step_fn: Callable[[State, int], tuple[State, Metrics]], start: int, schedule: Schedule,
        save: Callable[[int, State], None], log: Callable[[dict[str, Any]], None], *, desc: str,
        progress: bool = True, postfix: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        evaluate: Callable[[int, State], None] | None = None, evaluate_every: int = 0) -> tuple[State, int]:
    """Runs `step_fn(state, step)` (step: the steps done before it) from `start` to the
    schedule's end and returns (state, steps done).

    Each step's record, {"kind": "train", "step": its number from 1, **metrics,
    "steps_per_second"}, goes to `log`; `postfix` maps the newest record to the bar's postfix.
    `save(step, state)` runs every `checkpoint_every` steps and at the end. `evaluate(step,
    state)` runs every `evaluate_every` steps before the run's last one."""
    end = schedule.end()
    pending: list[tuple[int, Metrics]] = []
    step, last_saved = start, start or None
    interval_started = time.perf_counter()

    def flush() -> None:
        """Fetches the pending metrics, checks the loss and logs the records."""
        nonlocal pending, interval_started
        if not pending:
            return
        fetched = jax.device_get(pending)
        now = time.perf_counter()
        rate = len(fetched) / max(now - interval_started, 1e-9)
        pending, interval_started = [], now
        for at_step, metrics in fetched:
            record = {"kind": "train", "step": at_step, **{k: float(v) for k, v in metrics.items()},
                      "steps_per_second": rate}
            if not math.isfinite(record["loss"]):
                kept = f"the last good checkpoint (step {last_saved}) is kept" if last_saved else "no checkpoint was saved"
                raise UserError(f"The loss became {record['loss']} at step {at_step}; the run stopped and {kept}. "
                                + schedule.divergence_fix)
            log(record)
        if postfix is not None:
            bar.set_postfix(postfix(record), refresh=False)

    def pause(action: Callable[[int, State], None]) -> None:
        """Runs `action(step, state)` after the pending metrics, off the steps' clock."""
        nonlocal interval_started
        flush()
        action(step, state)
        interval_started = time.perf_counter()

    signals: list[int] = []
    previous = {s: signal.getsignal(s) or signal.SIG_DFL for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(number: int, _frame) -> None:
        signals.append(number)
        signal.signal(number, previous[number])  # a second one acts at once

    for number in previous:
        signal.signal(number, on_signal)
    bar = tqdm(total=schedule.total_steps, initial=start, desc=desc, unit="step", disable=not progress)
    try:
        while step < end:
            state, metrics = step_fn(state, step)
            step += 1
            pending.append((step, metrics))
            if step % schedule.log_every == 0:
                flush()
            bar.update(1)
            if evaluate is not None and evaluate_every and step % evaluate_every == 0 and step < schedule.total_steps:
                pause(evaluate)
            if step % schedule.checkpoint_every == 0 or step == end or signals:
                pause(save)
                last_saved = step
            if signal.SIGINT in signals:
                raise KeyboardInterrupt
            if signals:
                raise Stopped(f"SIGTERM at step {step}: checkpoint saved, resume with the same command.")
    finally:
        bar.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return state, step


def summary(first_step: int, step: int, seconds: float) -> dict[str, float]:
    """What one invocation of `run` did: the step reached, steps run, their seconds and rate."""
    return {"step": step, "steps_this_run": step - first_step, "train_seconds": seconds,
            "steps_per_second": (step - first_step) / seconds if seconds > 0 else 0.0}
