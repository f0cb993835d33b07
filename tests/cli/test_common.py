"""Config overrides are told apart from a command's own arguments; every path a command reads is
checked before any work, and a bad one is named in one line."""

import argparse
import os

import pytest

from cm3jax import cli
from cm3jax.cli.common import InputPath, split_overrides


def test_overrides_with_and_without_an_equals_sign_are_split_off_in_order():
    rest, overrides = split_overrides(["train", "--config.train.steps", "5", "--workdir", "w",
                                       "--config.model.d_model=64", "--config", "x.py"])
    assert rest == ["train", "--workdir", "w", "--config", "x.py"]
    assert overrides == ["--config.train.steps=5", "--config.model.d_model=64"]


def test_a_trailing_override_without_a_value_is_kept_for_the_config_parser_to_refuse():
    assert split_overrides(["--config.train.steps"]) == ([], ["--config.train.steps"])


# Every argument naming something a command reads; each must be an InputPath.
INPUTS = {"scenes", "images", "corpus", "source", "tokenizer", "ckpt", "yaml", "clip", "data", "codes",
          "text_tokenizer", "image_tokenizer", "bank", "index", "image", "checkpoint", "vqgan", "base"}


def _leaves(parser, path=()):
    """(command words, parser) of every runnable command."""
    sub = parser._subparsers
    if sub is None:
        yield path, parser
        return
    for name, child in sub._group_actions[0].choices.items():
        yield from _leaves(child, path + (name,))


def _argv(words, parser, existing_file, existing_dir):
    """A command line giving every required argument a value that parses."""
    argv = list(words)
    for action in parser._actions:
        if not action.required:
            continue
        if isinstance(action.type, InputPath):
            value = existing_file if action.type.kind == "file" else existing_dir
        else:
            value = str(action.choices[0]) if action.choices else ("1" if action.type in (int, float) else "x")
        argv += [action.option_strings[0], value]
    return argv


def _one_line_error(capsys, argv) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_every_argument_that_names_an_input_is_checked_as_one(capsys, tmp_path):
    """Each command, each input argument in turn: missing, the wrong kind (a file for a directory
    or back), and every time one line naming the path, exit status 2, before any work."""
    (tmp_path / "file").write_text("x\n")
    existing_file, existing_dir = str(tmp_path / "file"), str(tmp_path)
    checked = set()
    for words, parser in _leaves(cli.build_parser()):
        inputs = [a for a in parser._actions if isinstance(a.type, InputPath)]
        assert {a.dest for a in parser._actions} & INPUTS == {a.dest for a in inputs}, words
        for action in inputs:
            base = _argv(words, parser, existing_file, existing_dir)
            flag = action.option_strings[0]
            cases = [(str(tmp_path / "missing"), "no ")]
            if action.type.kind != "any":  # a file or a directory: only missing is wrong
                cases.append((existing_dir if action.type.kind == "file" else existing_file,
                              "expected " + action.type.what))
            for value, said in cases:
                err = _one_line_error(capsys, base + [flag, value])
                assert flag in err and value in err and said in err, err
            checked.add(" ".join(words) + " " + flag)
    assert len(checked) >= 25  # the walk reached the commands (a parser reshuffle would show here)


def test_a_keyword_passes_an_input_path_unchecked():
    corpus = InputPath("file", "corpus file", ("shapes",))
    assert corpus("shapes") == "shapes"
    with pytest.raises(argparse.ArgumentTypeError, match="no corpus file at shape$"):
        corpus("shape")


def test_an_unreadable_input_is_refused(tmp_path):
    locked = tmp_path / "locked.jsonl"
    locked.write_text("{}\n")
    locked.chmod(0)
    if os.access(locked, os.R_OK):
        pytest.skip("running as root: every file is readable")
    with pytest.raises(argparse.ArgumentTypeError, match="locked.jsonl is not readable"):
        InputPath("file", "scenes file")(str(locked))


def test_a_file_the_library_opens_itself_is_named_in_one_line(capsys, tmp_path):
    """A path that parses but holds the wrong thing: the reader's own error, in one line."""
    binary = tmp_path / "scenes.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    err = _one_line_error(capsys, ["shapes", "render", "--scenes", str(binary), "--out", str(tmp_path / "o.npz")])
    assert "is not a UTF-8 text file of scenes" in err
    scenes = tmp_path / "ok.jsonl"
    cli.main(["shapes", "sample", "--split", "eval", "--num", "2", "--out", str(scenes)])
    err = _one_line_error(capsys, ["shapes", "score", "--scenes", str(scenes), "--images", str(scenes)])
    assert "is not a readable .npz file" in err
    assert not (tmp_path / "o.npz").exists()
