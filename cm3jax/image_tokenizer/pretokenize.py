"""Offline pre-tokenization, as the paper did it: every image of a dataset becomes its grid of
VQ-GAN codes once, stored as a TFDS ArrayRecord dataset that training reads by index.

Sources: a made Shapes dataset (every non-empty split; the scene image and its edit,
grounding, edge and segmentation images, single-channel maps replicated to RGB) or a folder of
image files (one split; each file prepared by `preprocess`). Each example holds `id` and `codes` int32 [h, w]
(row by row is the token order), plus `edit_codes`, `grounding_codes`, `edges_codes` and
`segmentation_codes` for Shapes.

The dataset records the tokenizer that made it (its config and a SHA-256 of all its weights),
so a later stage can refuse codes from another tokenizer: `read_codes(dir, split, tokenizer=m)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable, Iterator

import jax
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx
from tqdm import tqdm

from cm3jax import tfds_arrayrecord
from cm3jax.errors import UserError
from cm3jax.fileio import built_aside
from cm3jax.image_tokenizer.codec import ImageEncoder
from cm3jax.image_tokenizer.preprocess import prepare_batch
from cm3jax.manifest import ManifestSpec
from cm3jax.shapes import dataset as shapes_dataset

NAME = "image_codes"
VERSION = "1.0.0"
MANIFEST = ManifestSpec("cm3jax_codes.json", "image-code dataset",
                        "`cm3jax tokenizer pretokenize --source SOURCE --tokenizer TOKENIZER --out {directory}`",
                        keys=("tokenizer.fingerprint", "source", "resolution", "grid", "splits"))
FOLDER_SPLIT = "train"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# codes field -> Shapes image field it encodes
SHAPES_FIELDS = {
    "codes": "image", "edit_codes": "edit_image", "grounding_codes": "grounding_image",
    "edges_codes": "edges", "segmentation_codes": "segmentation",
}


# ----------------------------------------------------------------------------- tokenizer identity

def tokenizer_fingerprint(model: nnx.Module) -> str:
    """"sha256:<hex>" over every variable of `model` but RNG state: path, dtype, shape and bytes,
    in path order. Equal weights give equal fingerprints whatever the process or device."""
    state = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))
    leaves = sorted((jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state))
    digest = hashlib.sha256()
    for path, leaf in leaves:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{path}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()


def tokenizer_record(model: nnx.Module) -> dict:
    """What identifies the tokenizer: its class, its config (if it has one) and its fingerprint."""
    config = getattr(model, "config", None)
    config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    return _as_json({"class": type(model).__name__, "config": config, "fingerprint": tokenizer_fingerprint(model)})


def _as_json(value):
    """`value` as it reads back from JSON (tuples become lists), so records compare equal."""
    return json.loads(json.dumps(value))


# ----------------------------------------------------------------------------- sources

@dataclasses.dataclass(frozen=True)
class SplitReader:
    name: str
    size: int
    # examples [start, stop) -> (their ids, {codes field: uint8 [n, R, R, 3]})
    read: Callable[[int, int], tuple[list[str], dict[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class Source:
    identity: dict  # what determines the images, for the manifest
    resolution: int
    fields: tuple[str, ...]
    splits: tuple[SplitReader, ...]


def shapes_source(shapes_dir: str) -> Source:
    """Every non-empty split of a made Shapes dataset (TFDS cannot open an empty ArrayRecord split)."""
    world_spec = shapes_dataset.load_spec(shapes_dir)
    splits = []
    for split, size in world_spec.counts().items():
        if size == 0:
            continue
        data = shapes_dataset.data_source(shapes_dir, split)

        def read(start: int, stop: int, data=data) -> tuple[list[str], dict[str, np.ndarray]]:
            examples = data.__getitems__(list(range(start, stop)))
            ids = [_text(e["id"]) for e in examples]
            return ids, {field: _rgb(np.stack([e[key] for e in examples])) for field, key in SHAPES_FIELDS.items()}

        splits.append(SplitReader(split, size, read))
    identity = {"kind": "shapes", "world": dataclasses.asdict(world_spec)}
    return Source(identity, world_spec.resolution, tuple(SHAPES_FIELDS), tuple(splits))


def _rgb(pixels_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N, R, R, 3] from uint8 [N, R, R, 3] or single-channel [N, R, R] (replicated)."""
    return np.repeat(pixels_uint8[..., None], 3, axis=-1) if pixels_uint8.ndim == 3 else pixels_uint8


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def folder_source(folder: str, resolution: int, split: str = FOLDER_SPLIT) -> Source:
    """Every image file under `folder` (recursively, dot-files skipped), in path order; an
    example's id is the file's path relative to `folder`."""
    paths = image_files(folder)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode() + b"\0")
        with open(os.path.join(folder, path), "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())

    def read(start: int, stop: int) -> tuple[list[str], dict[str, np.ndarray]]:
        ids = paths[start:stop]
        return ids, {"codes": prepare_batch([os.path.join(folder, p) for p in ids], resolution)}

    identity = {"kind": "folder", "files": len(paths), "digest": "sha256:" + digest.hexdigest()}
    return Source(identity, resolution, ("codes",), (SplitReader(split, len(paths), read),))


def image_files(folder: str) -> list[str]:
    """Relative POSIX paths of the image files under `folder`, sorted."""
    if not os.path.isdir(folder):
        raise UserError(f"No folder at {folder}; pass a made Shapes dataset or a folder of images.")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    if not found:
        raise UserError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}) and no Shapes dataset.")
    return sorted(found)


def open_source(source_dir: str, resolution: int | None, split: str) -> Source:
    """A made Shapes dataset if `source_dir` holds one (its images keep their resolution),
    else a folder of images prepared at `resolution`."""
    if shapes_dataset.is_dataset(source_dir):
        source = shapes_source(source_dir)
        if resolution is not None and resolution != source.resolution:
            raise UserError(f"{source_dir} is a Shapes dataset of resolution {source.resolution}, not {resolution}; "
                            f"make one at {resolution} (`cm3jax shapes make --resolution {resolution}`) "
                            f"or leave the resolution unset.")
        return source
    if resolution is None:
        raise UserError(f"{source_dir} is a folder of images: say at which resolution to tokenize them "
                        f"(the tokenizer's config gives none).")
    return folder_source(source_dir, resolution, split)


# ----------------------------------------------------------------------------- writing

def features(fields: tuple[str, ...], grid: tuple[int, int]) -> tfds.features.FeaturesDict:
    codes = {field: tfds.features.Tensor(shape=grid, dtype=np.int32, encoding="bytes") for field in fields}
    return tfds.features.FeaturesDict({"id": tfds.features.Text(), **codes})


def pretokenize(source_dir: str, out_dir: str, model: nnx.Module, batch_size: int = 64, *,
                resolution: int | None = None, split: str = FOLDER_SPLIT, progress: bool = True) -> dict:
    """Writes the codes of every image under `source_dir` (a made Shapes dataset, or a folder of
    image files prepared at `resolution`, by default the tokenizer's) to `out_dir`, built aside
    and renamed into place. An `out_dir` holding these very codes is left as it is; one holding
    anything else is refused. Returns figures: images encoded, seconds, images per second and
    compilations (0 where this process had compiled the same batch shape already)."""
    if not shapes_dataset.is_dataset(source_dir) and resolution is None:
        resolution = getattr(getattr(model, "config", None), "resolution", None)
    source = open_source(source_dir, resolution, split)
    encoder = ImageEncoder(model, batch_size)
    grid = encoder.output_shape((source.resolution, source.resolution, 3))
    manifest = _as_json({
        "tokenizer": tokenizer_record(model), "source": source.identity, "resolution": source.resolution,
        "grid": grid, "splits": {s.name: s.size for s in source.splits},
    })
    if MANIFEST.made_already(out_dir, manifest):
        return {"status": "exists", "images": 0, "seconds": 0.0, "images_per_second": 0.0, "compilations": 0}
    feats = features(source.fields, grid)
    serializer = tfds_arrayrecord.example_serializer(feats)
    total = sum(s.size for s in source.splits) * len(source.fields)
    start = time.perf_counter()
    with built_aside(out_dir, prefix=".tmp-codes-") as staging:
        data_dir = os.path.join(staging, NAME, VERSION)
        os.makedirs(data_dir)
        with tqdm(total=total, desc="pretokenize", unit="img", disable=not progress) as bar:
            split_infos = [tfds_arrayrecord.write_split(
                data_dir, NAME, reader.name,
                (serializer.serialize_example(feats.encode_example(example))
                 for example in _encoded_examples(reader, encoder, source.fields, bar)))
                for reader in source.splits]
        _write_info(data_dir, feats, split_infos, manifest)
        MANIFEST.write(staging, manifest)
    seconds = time.perf_counter() - start
    return {"status": "made", "images": total, "seconds": seconds, "images_per_second": total / seconds,
            "compilations": encoder.compilations}


def _encoded_examples(reader: SplitReader, encoder: ImageEncoder, fields: tuple[str, ...],
                      bar: tqdm) -> Iterator[dict]:
    """Examples with their codes, one batch of images on the device while the previous batch
    is being read back and written."""
    pending = None
    for start in range(0, reader.size, encoder.batch_size):
        ids, images = reader.read(start, min(start + encoder.batch_size, reader.size))
        dispatched = (ids, {field: encoder.dispatch(images[field]) for field in fields})
        if pending is not None:
            yield from _examples_of(*pending, bar)
        pending = dispatched
    if pending is not None:
        yield from _examples_of(*pending, bar)


def _examples_of(ids: list[str], codes: dict[str, jax.Array], bar: tqdm) -> Iterator[dict]:
    codes_np = {field: np.asarray(batch)[:len(ids)] for field, batch in codes.items()}
    bar.update(len(ids) * len(codes_np))
    for i, example_id in enumerate(ids):
        yield {"id": example_id, **{field: batch[i] for field, batch in codes_np.items()}}


def _write_info(data_dir: str, feats: tfds.features.FeaturesDict, split_infos, manifest: dict) -> None:
    tfds_arrayrecord.write_metadata(
        data_dir, feats, split_infos, VERSION,
        description="VQ-GAN codes of every image of a dataset, made offline by cm3jax.",
        metadata={"tokenizer": manifest["tokenizer"], "source": manifest["source"]})


# ----------------------------------------------------------------------------- reading

def check_tokenizer(codes_dir: str, tokenizer: nnx.Module | str) -> None:
    """Raises unless the codes in `codes_dir` were made by `tokenizer` (a model or a fingerprint)."""
    made_by = MANIFEST.read(codes_dir)["tokenizer"]
    expected = tokenizer if isinstance(tokenizer, str) else tokenizer_fingerprint(tokenizer)
    if made_by["fingerprint"] != expected:
        raise UserError(f"The codes in {codes_dir} were made by another tokenizer ({made_by['class']} "
                        f"{made_by['fingerprint']}, config {made_by['config']}), not by this one ({expected}). "
                        f"Use the tokenizer that made them, or pretokenize again with this one.")


def read_codes(codes_dir: str, split: str, tokenizer: nnx.Module | str | None = None):
    """Random-access source of one split (a `tfds.data_source`): source[i] is a dict with `id`
    and the codes fields. Given a `tokenizer` (model or fingerprint), refuses codes it did not make."""
    manifest = MANIFEST.read(codes_dir)
    if tokenizer is not None:
        check_tokenizer(codes_dir, tokenizer)
    if split not in manifest["splits"]:
        raise UserError(f"{codes_dir} has no split {split!r}; it has {', '.join(manifest['splits'])}.")
    builder = tfds.builder_from_directory(os.path.join(codes_dir, NAME, VERSION))
    return builder.as_data_source(split=split)
