"""The `cm3jax` command as a whole: its groups, help that loads no JAX, errors without a
traceback, and which commands restart with cm3jax's malloc settings."""

import subprocess
import sys

import pytest

from cm3jax import cli

GROUPS = {"shapes", "tokenizer", "model", "train", "finetune", "retrieval", "generate", "caption", "answer", "edit", "infill",
          "eval", "demo", "import", "export"}


def _choices(parser):
    return parser._subparsers._group_actions[0].choices


def test_every_group_is_there_and_lists_only_working_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "shapes" in capsys.readouterr().out
    commands = _choices(cli.build_parser())
    assert set(commands) == GROUPS
    assert set(_choices(commands["shapes"])) == {"sample", "render", "score", "make", "preview"}
    assert set(_choices(commands["retrieval"])) == {"clip", "bank", "build", "query", "neighbours"}
    assert set(_choices(commands["tokenizer"])) == {"text", "image", "pretokenize", "convert-chameleon"}


def test_help_and_parsing_load_no_jax():
    code = ("import sys; from cm3jax import cli; cli.build_parser().parse_args(['shapes', 'sample', '--split', 'eval', "
            "'--num', '1', '--out', 'x']); print(sorted(m for m in ('jax', 'tensorflow_datasets', 'scann') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "cm3jax", "shapes", "sample", "--split", "nope", "--num", "1",
                           "--out", "x"], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'nope'" in done.stderr


def test_config_overrides_go_only_to_commands_that_take_a_config(capsys):
    with pytest.raises(SystemExit):
        cli.main(["shapes", "sample", "--split", "eval", "--num", "1", "--out", "x", "--config.world.seed=1"])
    assert "this command takes no --config" in capsys.readouterr().err


def test_only_the_measured_commands_restart(monkeypatch):
    restarts = []
    monkeypatch.setattr(cli, "restart_with_reusing_malloc", lambda: restarts.append(sys.argv[1]))
    monkeypatch.setattr(cli, "main", lambda: 0)
    for argv in (["cm3jax", "train", "--workdir", "w"], ["cm3jax", "shapes", "sample"], ["cm3jax", "demo"],
                 ["cm3jax", "retrieval", "query"], ["cm3jax"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit):
            cli.console_main()
    assert restarts == ["train"]


def test_a_file_error_inside_the_library_is_one_line_naming_the_file(capsys, monkeypatch, tmp_path):
    import cm3jax.shapes.scene
    scenes = tmp_path / "scenes.jsonl"
    scenes.write_text("")

    def refused(path):
        raise PermissionError(13, "Permission denied", "/run/scenes.jsonl")

    monkeypatch.setattr(cm3jax.shapes.scene, "read_scenes", refused)
    assert cli.main(["shapes", "render", "--scenes", str(scenes), "--out", str(tmp_path / "o.npz")]) == 2
    assert capsys.readouterr().err == "cm3jax: error: /run/scenes.jsonl: Permission denied\n"
