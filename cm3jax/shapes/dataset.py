"""The Shapes world as a TFDS dataset in ArrayRecord, written and read without TensorFlow.

One example per scene holds every task variant of that scene, so a data pipeline picks
its task mixture at read time. Read it back with `data_source(dir, split)` (a
`tfds.data_source`, random access) and feed it to grain.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import time
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from cm3jax import tfds_arrayrecord
from cm3jax.fileio import built_aside
from cm3jax.manifest import ManifestSpec
from cm3jax.shapes import spec, world
from cm3jax.shapes.scene import Scene
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.tasks import SceneTasks, scene_tasks

NAME = "shapes_world"
TASK_STREAM = 1  # scene_rng stream of a scene's task draws (0 is its layout)


@dataclasses.dataclass(frozen=True)
class WorldSpec:
    """Everything that determines the bytes of a made dataset."""
    num_train: int = 10_000
    num_eval: int = 1_000
    num_novel: int = 500
    num_emblems_unseen: int = 160
    num_memory: int = 20_000
    seed: int = 0
    resolution: int = spec.BASE_RESOLUTION
    version: str = spec.WORLD_VERSION

    def counts(self) -> dict[str, int]:
        return {"train": self.num_train, "eval": self.num_eval, "novel": self.num_novel,
                "emblems_unseen": self.num_emblems_unseen, "memory": self.num_memory}

    def check(self) -> "WorldSpec":
        spec.check_resolution(self.resolution)
        for split, n in self.counts().items():
            if n < 0:
                raise ShapesError(f"The number of {split} scenes must be zero or more, got {n}.")
        if 0 < self.num_memory < len(world.EMBLEM_NAMES):
            raise ShapesError(f"memory holds one document per emblem, so it needs at least "
                              f"{len(world.EMBLEM_NAMES)} scenes (or 0), got {self.num_memory}.")
        return self


MANIFEST = ManifestSpec("cm3jax_shapes.json", "Shapes dataset", "`cm3jax shapes make --out {directory}`",
                        keys=tuple(field.name for field in dataclasses.fields(WorldSpec)))


def features(resolution: int) -> tfds.features.FeaturesDict:
    image = tfds.features.Tensor(shape=(resolution, resolution, 3), dtype=np.uint8, encoding="bytes")
    plane = tfds.features.Tensor(shape=(resolution, resolution), dtype=np.uint8, encoding="bytes")
    text = tfds.features.Text
    return tfds.features.FeaturesDict({
        "id": text(), "scene": text(), "caption": text(), "image": image,
        "caption_short": text(), "caption_long": text(),
        "question": text(), "answer": text(),
        "edit_instruction": text(), "edit_scene": text(), "edit_image": image,
        "grounding_caption": text(), "grounding_scene": text(), "grounding_image": image,
        "edges": plane, "segmentation": plane,
        "infill_box": tfds.features.Tensor(shape=(4,), dtype=np.int32),
    })


def example_tasks(split: str, index: int, seed: int, resolution: int) -> SceneTasks:
    """Scene `index` of a split with every task drawn from it: what example `index` stores, for
    any index (and for `dev`, which is never stored)."""
    scene = world.sample_scene(split, index, seed, resolution)
    return scene_tasks(scene, world.scene_rng(split, index, seed, TASK_STREAM), allow_novel=split == "novel")


def make_example(split: str, index: int, seed: int, resolution: int) -> dict:
    t = example_tasks(split, index, seed, resolution)
    scene = t.scene
    return {
        "id": scene.id, "scene": scene.dumps(), "caption": scene.caption, "image": t.image,
        "caption_short": t.caption_short, "caption_long": t.caption_long,
        "question": t.question, "answer": t.answer,
        "edit_instruction": t.edit_instruction, "edit_scene": t.edit_scene.dumps(), "edit_image": t.edit_image,
        "grounding_caption": t.grounding_scene.caption, "grounding_scene": t.grounding_scene.dumps(),
        "grounding_image": t.grounding_image,
        "edges": t.edges, "segmentation": t.segmentation,
        "infill_box": np.asarray(t.infill_box, np.int32),
    }


def _make_chunk(args) -> list[bytes]:
    """Worker: examples [start, stop) of a split, already encoded and serialized."""
    split, start, stop, seed, resolution = args
    serializer = _serializer(resolution)
    feats = features(resolution)
    return [serializer.serialize_example(feats.encode_example(make_example(split, i, seed, resolution)))
            for i in range(start, stop)]


def _serializer(resolution: int):
    return tfds_arrayrecord.example_serializer(features(resolution))


def _serialized_split(split: str, num: int, world_spec: WorldSpec, workers: int, bar: tqdm) -> Iterator[bytes]:
    chunk = 500
    jobs = [(split, s, min(s + chunk, num), world_spec.seed, world_spec.resolution) for s in range(0, num, chunk)]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for records in pool.map(_make_chunk, jobs):
                yield from records
                bar.update(len(records))
    else:
        for job in jobs:
            records = _make_chunk(job)
            yield from records
            bar.update(len(records))


def make(out_dir: str, world_spec: WorldSpec, workers: int | None = None, progress: bool = True) -> dict:
    """Writes every split under `out_dir` (built aside, then renamed into place) and returns
    timing figures. A directory that already holds this exact dataset is left as it is; one
    that holds anything else is refused."""
    world_spec.check()
    manifest = dataclasses.asdict(world_spec)
    if MANIFEST.made_already(out_dir, manifest):
        return {"status": "exists", "scenes": 0, "seconds": 0.0}
    workers = workers or min(os.cpu_count() or 1, 8)
    start = time.perf_counter()
    total = sum(world_spec.counts().values())
    with built_aside(out_dir, prefix=".tmp-shapes-") as staging:
        data_dir = os.path.join(staging, NAME, world_spec.version)
        os.makedirs(data_dir)
        with tqdm(total=total, desc="shapes make", unit="scene", disable=not progress) as bar:
            split_infos = [tfds_arrayrecord.write_split(data_dir, NAME, split,
                                                        _serialized_split(split, num, world_spec, workers, bar))
                           for split, num in world_spec.counts().items()]
        _write_info(data_dir, world_spec, split_infos)
        MANIFEST.write(staging, manifest)
    seconds = time.perf_counter() - start
    return {"status": "made", "scenes": total, "seconds": seconds, "scenes_per_second": total / seconds}


def _write_info(data_dir: str, world_spec: WorldSpec, split_infos) -> None:
    tfds_arrayrecord.write_metadata(
        data_dir, features(world_spec.resolution), split_infos, world_spec.version,
        description="The cm3jax Shapes world: procedural scenes with every task variant (docs/shapes.md).",
        metadata={"world": dataclasses.asdict(world_spec)})


def is_dataset(directory: str) -> bool:
    return MANIFEST.exists(directory)


def load_spec(data_dir: str) -> WorldSpec:
    manifest = MANIFEST.read(data_dir)
    return WorldSpec(**{key: manifest[key] for key in MANIFEST.keys})


def data_source(data_dir: str, split: str):
    """Random-access source of one split (a `tfds.data_source`): source[i] is example i."""
    world_spec = load_spec(data_dir)
    world.check_split(split)
    if split not in world_spec.counts():
        raise ShapesError(f"The {split} split is not stored in a made dataset; draw its scenes with "
                          f"cm3jax.shapes.dataset.example_tasks({split!r}, index, seed, resolution).")
    if world_spec.counts()[split] == 0:
        return []  # array_record cannot open an empty shard; an empty split reads as empty
    builder = tfds.builder_from_directory(os.path.join(data_dir, NAME, world_spec.version))
    return builder.as_data_source(split=split)


def scene_of(example: dict, key: str = "scene") -> Scene:
    value = example[key]
    return Scene.from_json(json.loads(value.decode() if isinstance(value, bytes) else value))


def iterate(data_dir: str, split: str) -> Iterator[dict]:
    source = data_source(data_dir, split)
    for i in range(len(source)):
        yield source[i]
