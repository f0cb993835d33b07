"""Decoder weights from Hugging Face Chameleon safetensors, tensor by tensor, and back.

Each tensor is read alone from its (memory-mapped) shard, laid out as ours, cast to float32 and
put on its devices with the sharding its logical axes give on `mesh`. `read_decoder` keeps them
all (the model in memory); `write_decoder` writes them into a cm3jax checkpoint a block at a
time, so the host never holds much more than one block.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Iterable, Mapping

import jax
import numpy as np
from flax import nnx
from orbax.checkpoint.experimental import v1 as ocp_v1
from safetensors.numpy import save_file
from tqdm import tqdm

from cm3jax import safetensors_io
from cm3jax.chameleon.tensors import Tensor, plan
from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.safetensors_io import INDEX_FILE, Entry
from cm3jax.sharding import state_shardings

VQ_PREFIX = "model.vqmodel."  # the VQ-VAE encoder inside a full checkpoint: the image tokenizer's, not ours
FLOATS = ("F16", "BF16", "F32", "F64")
PARTIAL_SAVE_ITEM = "state"  # where Orbax's partial saving puts the tree inside its directory
_LISTED = 6


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def check_tensors(found: Mapping[str, Entry], tensors: list[Tensor], where: str) -> None:
    """Refuses a checkpoint whose tensors are not exactly the config's, naming each one that is
    missing, unexpected, mis-shaped or not floating point."""
    wanted = {t.hf_name: t for t in tensors}
    decoder = {name: e for name, e in found.items() if not name.startswith(VQ_PREFIX)}
    problems = []
    if wanted.keys() - decoder.keys():
        problems.append(f"missing {_listing(wanted.keys() - decoder.keys())}")
    if decoder.keys() - wanted.keys():
        problems.append(f"unexpected {_listing(decoder.keys() - wanted.keys())}")
    for name in sorted(wanted.keys() & decoder.keys()):
        entry, tensor = decoder[name], wanted[name]
        if entry.shape != tensor.hf_shape:
            problems.append(f"{name} has shape {list(entry.shape)}, the config says {list(tensor.hf_shape)}")
        elif entry.dtype not in FLOATS:
            problems.append(f"{name} has dtype {entry.dtype}, expected floating point")
    if problems:
        raise UserError(f"{where} does not match its config.json: {'; '.join(problems)}. Use the config.json "
                        f"that came with these weights, and every shard its index names.")


def _prepare(path: str, config: DecoderConfig, mesh: jax.sharding.Mesh | None):
    """(the checkpoint's entries, the tensor plan, each parameter's sharding by path), after the
    checks that refuse a checkpoint that is not the config's."""
    if config.scan_layers:
        raise ValueError("Chameleon imports build unrolled blocks; import with scan_layers=False")
    found = safetensors_io.entries(safetensors_io.weight_files(path))
    tensors = plan(config)
    check_tensors(found, tensors, path)
    _, params = nnx.split(nnx.eval_shape(lambda: Decoder(config, nnx.Rngs(0))), nnx.Param)
    unplanned = sorted(".".join(map(str, p)) for p, _ in nnx.to_flat_state(params)
                       if p not in {t.path for t in tensors})
    if unplanned:
        raise UserError(f"These decoder parameters have no Chameleon tensor: {_listing(unplanned)}; the model config "
                        f"uses switches Chameleon lacks.")
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda v: v.replace(device), params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    else:
        shardings = state_shardings(params, mesh)
    shapes = {p: v.get_value().shape for p, v in nnx.to_flat_state(params)}
    return found, tensors, params, {p: _divisible(v.get_value(), shapes[p]) for p, v in nnx.to_flat_state(shardings)}


def _divisible(sharding, shape: tuple[int, ...]):
    """The sharding with every axis that the mesh does not divide evenly left whole (replicated):
    a checkpoint's sizes need not be the multiples training pads to (a vocabulary of 65,537, say)."""
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return sharding
    sizes = sharding.mesh.shape
    spec = []
    for dim, axes in zip(shape, tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        spec.append(axes if dim % int(np.prod([sizes[a] for a in names], dtype=int)) == 0 else None)
    return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))


def _placed(tensor: Tensor, entry: Entry, sharding) -> jax.Array:
    """One tensor read alone from its shard, in our layout, float32, on its devices."""
    return jax.device_put(tensor.to_ours(safetensors_io.read([entry])[entry.key]), sharding)


def read_decoder(path: str, config: DecoderConfig, mesh: jax.sharding.Mesh | None = None,
                 progress: bool = False) -> nnx.State:
    """The decoder's parameters (an nnx.State of Params, as training saves them) from the
    safetensors checkpoint at `path` (a file, an index, or a directory of either), in memory."""
    found, tensors, params, shardings = _prepare(path, config, mesh)
    variables = dict(nnx.to_flat_state(params))
    for tensor in tqdm(tensors, desc="import", unit="tensor", disable=not progress):
        variables[tensor.path].set_value(_placed(tensor, found[tensor.hf_name], shardings[tensor.path]))
    return params


def write_decoder(path: str, config: DecoderConfig, directory: str, mesh: jax.sharding.Mesh | None = None,
                  progress: bool = False) -> int:
    """Writes the decoder's parameters from the checkpoint at `path` as the `params` item of a
    cm3jax checkpoint step (`directory` = WORKDIR/checkpoints/STEP/params), one block at a time
    (Orbax's partial saving), so that host memory holds one block's arrays, not the model's.
    Returns the parameter count."""
    found, tensors, _, shardings = _prepare(path, config, mesh)
    groups: dict[tuple, list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.path[:2] if tensor.path[0] == "blocks" else tensor.path[:1], []).append(tensor)
    staging = directory + ".staging"
    count = 0
    with tqdm(total=len(tensors), desc="import", unit="tensor", disable=not progress) as bar:
        for group in groups.values():
            tree: dict = {}
            for tensor in group:
                node = tree
                for key in tensor.path[:-1]:
                    node = node.setdefault(str(key), {})
                array = _placed(tensor, found[tensor.hf_name], shardings[tensor.path])
                node[tensor.path[-1]] = {"value": array}  # an nnx.Param saves its array under "value"
                count += array.size
                bar.update()
            ocp_v1.partial.save(staging, tree)
            del tree
    ocp_v1.partial.finalize(staging)
    os.rename(os.path.join(staging, PARTIAL_SAVE_ITEM), directory)
    shutil.rmtree(staging)
    return count


def hf_tensors(params: nnx.State, config: DecoderConfig) -> Iterable[tuple[str, np.ndarray]]:
    """(Hugging Face name, float32 array in its layout) of every decoder tensor, in file order."""
    flat = dict(nnx.to_flat_state(params))
    for tensor in plan(config):
        value = np.asarray(flat[tensor.path].get_value(), np.float32)
        yield tensor.hf_name, tensor.to_hf(value if tensor.layer is None else value[tensor.layer])


def write_sharded(named: Iterable[tuple[str, np.ndarray]], out_dir: str, max_shard_bytes: int) -> list[str]:
    """Safetensors shards of at most `max_shard_bytes` each (a bigger tensor gets its own) and, when
    there is more than one, the index naming each tensor's shard. Returns the files written."""
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in named:
        if shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(out_dir, name), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(a.nbytes for s in shards for a in s.values())},
                 "weight_map": {t: name for name, shard in zip(names, shards) for t in shard}}
        with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
        names.append(INDEX_FILE)
    return names
