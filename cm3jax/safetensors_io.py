"""Reading safetensors checkpoints, whole or sharded (`model.safetensors.index.json` naming the
shard of every tensor), with a UserError naming the file for anything unreadable.

    found = entries(weight_files(path))        # name -> Entry(file, key, shape, dtype), headers only
    arrays = read(found.values())              # name -> np.ndarray, each file opened once
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Iterable

import numpy as np
from safetensors import SafetensorError, safe_open

from cm3jax.errors import UserError
from cm3jax.manifest import read_json

INDEX_FILE = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class Entry:
    file: str
    key: str
    shape: tuple[int, ...]
    dtype: str  # safetensors' name: "F32", "BF16", ...


def weight_files(path: str) -> list[str]:
    """The files of a checkpoint at `path`: a .safetensors file; an index .json (its shards); or
    a directory holding an index (its shards) or else .safetensors files (all of them)."""
    if os.path.isdir(path):
        index = os.path.join(path, INDEX_FILE)
        if os.path.isfile(index):
            return _shards(index)
        files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
        if not files:
            raise UserError(f"No weights file in {path} (no {INDEX_FILE} and no .safetensors file; pickled "
                            f"pytorch_model.bin files are not read): save the model with "
                            f"save_pretrained(safe_serialization=True), or pass the weights file itself.")
        return files
    if not os.path.isfile(path):
        raise UserError(f"Weights file {path} does not exist; check the path.")
    return _shards(path) if path.endswith(".json") else [path]


def _shards(index: str) -> list[str]:
    fix = "it should be a JSON object with a weight_map (tensor name -> shard file); download it again"
    weight_map = read_json(index, "The safetensors index", fix).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise UserError(f"{index} is not a safetensors index: {fix}.")
    return [os.path.join(os.path.dirname(index), name) for name in sorted(set(weight_map.values()))]


def _open(file: str):
    try:
        return safe_open(file, framework="numpy")
    except FileNotFoundError:
        raise UserError(f"Weights file {file} does not exist; check the path (or the index naming it).") from None
    except (SafetensorError, OSError) as e:
        raise UserError(f"{file} is not a readable safetensors file ({e}); it may be truncated or corrupt: "
                        f"download or convert it again.") from None


def entries(files: Iterable[str]) -> dict[str, Entry]:
    """Every tensor of `files` by name, from their headers (no tensor data is read)."""
    found = {}
    for file in files:
        with _open(file) as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                found[key] = Entry(file, key, tuple(tensor.get_shape()), tensor.get_dtype())
    return found


def read(wanted: Iterable[Entry]) -> dict[str, np.ndarray]:
    """The tensors of `wanted` by key, in their stored dtype (bfloat16 as ml_dtypes' bfloat16)."""
    by_file: dict[str, list[str]] = {}
    for entry in wanted:
        by_file.setdefault(entry.file, []).append(entry.key)
    arrays = {}
    for file, keys in by_file.items():
        with _open(file) as f:
            for key in keys:
                try:
                    arrays[key] = f.get_tensor(key)
                except Exception as e:  # safetensors raises its own error types for bad data
                    raise UserError(f"Cannot read {key} from {file} ({e}); the file may be corrupt: download or "
                                    f"convert it again.") from None
    return arrays


def read_all(path: str) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint at `path` (see `weight_files`)."""
    return read(entries(weight_files(path)).values())
