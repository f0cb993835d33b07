"""Argument helpers every command group shares."""

from __future__ import annotations

import argparse


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
