"""`cm3jax train`: bad configs are refused before anything is written (the training run itself
is tested end to end in tests/train/test_loop.py and, through this command, by the demo)."""

from pathlib import Path

from cm3jax import cli

ROOT = Path(__file__).resolve().parents[2]


def test_a_bad_config_key_is_an_error_with_the_nearest_keys_and_no_traceback(tmp_path, capsys):
    assert cli.main(["train", "--workdir", str(tmp_path / "run"), "--config.train.step=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cm3jax: error: Unknown config key 'train.step'") and "train.steps" in err
    assert not (tmp_path / "run").exists()


def test_a_context_longer_than_the_model_is_refused_before_training(tmp_path, capsys):
    argv = ["train", "--config", f"{ROOT}/experiments/shapes_tiny.py:test", "--workdir", str(tmp_path / "run"),
            "--config.train.seq_len=4096"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "train.seq_len=4096 exceeds model.max_seq_len=128" in err and not (tmp_path / "run").exists()
