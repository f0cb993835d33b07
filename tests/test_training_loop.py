"""The loop every trainer runs, on a counter: when metrics are fetched and checkpoints written,
and what a non-finite loss, SIGTERM and Ctrl-C do."""

import os
import signal

import jax.numpy as jnp
import pytest

from cm3jax.errors import UserError
from cm3jax.training_loop import Schedule, Stopped, run


class Trainer:
    """State: a device counter. Records which steps ran, were logged, saved and evaluated."""

    def __init__(self, nan_at: int | None = None, signal_at: int | None = None, signum: int = signal.SIGTERM):
        self.nan_at, self.signal_at, self.signum = nan_at, signal_at, signum
        self.ran, self.logged, self.saved, self.evaluated = 0, [], [], []

    def step(self, state, step):
        self.ran = step + 1
        if self.ran == self.signal_at:
            os.kill(os.getpid(), self.signum)
        loss = jnp.float32(float("nan") if self.ran == self.nan_at else 1.0 / self.ran)
        return state + 1, {"loss": loss, "learning_rate": jnp.float32(0.1 * self.ran)}

    def log(self, record):
        self.logged.append((self.ran, record))  # (steps run when it was logged, record)

    def save(self, step, state):
        assert int(state) == step
        self.saved.append(step)

    def run(self, schedule: Schedule, start: int = 0, **kwargs):
        return run(jnp.int32(start), self.step, start, schedule, self.save, self.log, desc="test", progress=False,
                   **kwargs)


def test_metrics_are_fetched_every_log_every_steps_and_before_each_checkpoint():
    trainer = Trainer()
    state, step = trainer.run(Schedule(total_steps=10, log_every=4, checkpoint_every=3))
    assert step == 10 and int(state) == 10
    assert [r["step"] for _, r in trainer.logged] == list(range(1, 11))
    assert [ran for ran, _ in trainer.logged] == [3, 3, 3, 4, 6, 6, 8, 8, 9, 10]
    assert trainer.saved == [3, 6, 9, 10]
    first = trainer.logged[1][1]
    assert first["kind"] == "train" and first["loss"] == pytest.approx(0.5) and first["learning_rate"] == \
        pytest.approx(0.2) and first["steps_per_second"] > 0


def test_a_resumed_run_stops_at_stop_at_step_with_a_checkpoint():
    trainer = Trainer()
    _, step = trainer.run(Schedule(total_steps=10, log_every=100, checkpoint_every=4, stop_at_step=7), start=2)
    assert step == 7 and trainer.saved == [4, 7] and [r["step"] for _, r in trainer.logged] == [3, 4, 5, 6, 7]


def test_a_nan_stops_the_run_before_a_checkpoint_covers_it():
    trainer = Trainer(nan_at=5)
    with pytest.raises(UserError, match=r"loss became nan at step 5.*last good checkpoint \(step 4\).*Lower lr"):
        trainer.run(Schedule(total_steps=10, log_every=100, checkpoint_every=2, divergence_fix="Lower lr."))
    assert trainer.saved == [2, 4] and trainer.ran == 6, "found at the step-6 checkpoint, which is not written"
    assert [r["step"] for _, r in trainer.logged] == [1, 2, 3, 4]


def test_a_nan_before_any_checkpoint_says_none_was_saved():
    trainer = Trainer(nan_at=1)
    with pytest.raises(UserError, match="at step 1; the run stopped and no checkpoint was saved"):
        trainer.run(Schedule(total_steps=10, log_every=3, checkpoint_every=5))
    assert trainer.saved == []


def test_sigterm_saves_after_the_current_step_and_stops():
    previous = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(signal_at=3)
    with pytest.raises(Stopped, match="SIGTERM at step 3: checkpoint saved"):
        trainer.run(Schedule(total_steps=10, log_every=100, checkpoint_every=100))
    assert trainer.saved == [3] and [r["step"] for _, r in trainer.logged] == [1, 2, 3]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_ctrl_c_saves_after_the_current_step_and_raises_keyboard_interrupt():
    previous = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    trainer = Trainer(signal_at=2, signum=signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(Schedule(total_steps=10, log_every=100, checkpoint_every=100))
    assert trainer.saved == [2] and signal.getsignal(signal.SIGINT) is previous


def test_evaluations_run_on_their_cadence_after_the_metrics_before_them():
    trainer = Trainer()
    trainer.run(Schedule(total_steps=6, log_every=100, checkpoint_every=100),
                evaluate=lambda step, state: trainer.evaluated.append((step, int(state), len(trainer.logged))),
                evaluate_every=3)
    assert trainer.evaluated == [(3, 3, 3)], "none at the last step: the trainer's own final eval covers it"


def test_the_bar_postfix_shows_the_newest_record(capsys):
    trainer = Trainer()
    run(jnp.int32(0), trainer.step, 0, Schedule(4, 2, 100), trainer.save, trainer.log, desc="bar",
        postfix=lambda r: {"loss": f"{r['loss']:.2f}"})
    assert "loss=0.25" in capsys.readouterr().err
