"""Experiment configs: `--config experiments/NAME.py:VARIANT` plus `--config.a.b=value` overrides.

The parsing is ml_collections' own (`config_flags`), run on a private absl FlagValues
so every subcommand can take a config without global flag state. Errors become
UserErrors that name the problem: a missing file, an unknown key with its nearest
valid keys, a value of the wrong type.
"""

from __future__ import annotations

import difflib
import os
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from cm3jax.errors import UserError


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted key path of a (nested) ConfigDict, parents included."""
    keys = []
    for name, value in config.items():
        path = f"{prefix}{name}"
        keys.append(path)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, path + "."))
    return keys


def _parse(argv: list[str]) -> ml_collections.ConfigDict:
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv, lock_config=True)
    flag_values(argv)
    config = flag_values.config
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{argv[1][len('--config='):]} did not give a ConfigDict: its get_config() must return one.")
    return config


def load_config(config_arg: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `path.py[:variant]` and applies `--config.key=value` overrides (locked config)."""
    path = config_arg.split(":", 1)[0]
    if not os.path.isfile(path):
        raise UserError(f"No config file at {path!r}; pass --config experiments/NAME.py[:VARIANT].")
    overrides = list(overrides)
    for item in overrides:
        if not item.startswith("--config."):
            raise UserError(f"Override {item!r} must look like --config.key=value.")
    base = ["cm3jax", f"--config={config_arg}"]
    try:
        return _parse(base + overrides)
    except (KeyError, AttributeError) as e:
        keys = flat_keys(_parse(base))
        for item in overrides:
            key = item[len("--config."):].split("=", 1)[0]
            if key not in keys:
                near = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
                hint = f" Nearest valid keys: {', '.join(near)}." if near else ""
                raise UserError(f"Unknown config key {key!r} in {config_arg}.{hint}") from None
        raise UserError(f"Config override failed: {e}") from None
    except (flags.Error, ValueError) as e:
        raise UserError(f"Bad config {config_arg}: {e}") from None
