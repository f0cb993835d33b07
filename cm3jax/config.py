"""Experiment configs: `--config experiments/NAME.py:VARIANT` plus `--config.a.b=value` overrides,
their JSON round trip (checkpoints record the config they were trained with), and the schema of a
decoder experiment: every experiments/*.py file builds its config with `decoder_experiment`, so all
share one key set and an unknown override key is caught.

The parsing is ml_collections' own (`config_flags`), run on a private absl FlagValues
so every subcommand can take a config without global flag state. Errors become
UserErrors that name the problem: a missing file, an unknown key with its nearest
valid keys, a value of the wrong type.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.paths import find_path, record_path
from cm3jax.recipes import recipe_path


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
    path, _, variant = config_arg.partition(":")
    path = recipe_path(path)
    config_arg = f"{path}:{variant}" if variant else path
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


def to_json_dict(config: ml_collections.ConfigDict) -> dict:
    """Plain JSON types only (tuples become lists)."""
    return json.loads(config.to_json())


# The config keys naming what a decoder run reads. A checkpoint saves them absolute, with their
# places relative to the run under `paths` (cm3jax.paths), so a run loads from any working
# directory and after being moved with its inputs.
PATH_KEYS = ("shapes_dir", "codes_dir", "text_tokenizer", "image_tokenizer", "retrieval_bank", "neighbours")


def with_recorded_paths(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The config as a run in `workdir` saves it: `data` paths absolute, `paths` relative to the run."""
    saved = to_json_dict(config)
    data = saved.get("data", {})
    records = {key: record_path(data[key], workdir) for key in PATH_KEYS if data.get(key)}
    for key, record in records.items():
        data[key] = record["path"]
    saved["paths"] = {key: record["relative"] for key, record in records.items()}
    return saved


def with_found_paths(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """A saved config with each `data` path as it is now for the run at `workdir` (a config saved
    before paths were recorded keeps its paths as given)."""
    for key, relative in config.get("paths", {}).items():
        config.data[key] = find_path({"path": config.data[key], "relative": relative}, workdir)
    return config


def from_json_dict(data: dict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(data)


def decoder_experiment(model: dict, train: dict | None = None, paper_params: float | None = None
                       ) -> ml_collections.ConfigDict:
    defaults = DecoderConfig.defaults()
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({**defaults, **model})
    config.train = ml_collections.ConfigDict({
        "seq_len": 512,
        "warmup_steps": 0,
        "peak_lr": 1e-3,
        "end_lr_fraction": 0.1,
        "optimizer": "adamw",
        "b1": 0.9,
        "b2": 0.98,
        "eps": 1e-8,
        "weight_decay": 0.1,
        "clip_norm": 1.0,
        "z_loss": 0.0,
        "steps": 0,
        "batch_size": 8,  # rows of seq_len tokens
        "seed": 0,
        "log_every": 50,  # steps per console / TensorBoard line (metrics.jsonl gets every step)
        **(train or {}),
    })
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.paper_params = paper_params or 0.0  # nominal size in the paper, for the size check
    return config


def decoder_config(config: ml_collections.ConfigDict) -> DecoderConfig:
    return DecoderConfig.from_dict(config.model.to_dict())
