"""Argument helpers every command group shares."""

from __future__ import annotations

import argparse
import os


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (the command, the problem, where to look), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class InputPath:
    """An argparse type for a path a command reads: refused at once, in one line naming it, when
    it is missing, of the wrong kind (a file for a directory or back) or unreadable. `keywords`
    are values taken as they are (`--corpus shapes`)."""

    def __init__(self, kind: str, what: str, keywords: tuple[str, ...] = ()):
        assert kind in ("file", "dir", "any"), kind
        self.kind, self.what, self.keywords = kind, what, keywords

    def __call__(self, value: str) -> str:
        if value in self.keywords:
            return value
        if not os.path.exists(value):
            raise argparse.ArgumentTypeError(f"no {self.what} at {value}")
        if self.kind == "file" and os.path.isdir(value):
            raise argparse.ArgumentTypeError(f"{value} is a directory; expected {self.what} (a file)")
        if self.kind == "dir" and not os.path.isdir(value):
            raise argparse.ArgumentTypeError(f"{value} is a file; expected {self.what} (a directory)")
        if not os.access(value, os.R_OK | (os.X_OK if self.kind == "dir" else 0)):
            raise argparse.ArgumentTypeError(f"{value} is not readable by this user")
        return value

    def __repr__(self) -> str:  # argparse names the type in some messages
        return self.what


def input_file(what: str, keywords: tuple[str, ...] = ()) -> InputPath:
    return InputPath("file", what, keywords)


def input_dir(what: str) -> InputPath:
    return InputPath("dir", what)


def input_path(what: str) -> InputPath:
    """A file or a directory."""
    return InputPath("any", what)


def file_error_line(error: OSError) -> str:
    """One line for a file the library could not open, naming it (`error.filename` is set)."""
    return f"{error.filename}: {error.strerror or type(error).__name__}"


def add_config_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--config", default=default,
                        help="experiments/NAME.py[:VARIANT]; override keys with --config.a.b=value")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.key=value` (and `--config.key value`) overrides from other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            if "=" not in arg and i + 1 < len(argv):
                arg, i = f"{arg}={argv[i + 1]}", i + 1
            overrides.append(arg)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def print_json(value) -> None:
    import json
    print(json.dumps(value, indent=2, default=str))
