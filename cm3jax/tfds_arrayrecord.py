"""TFDS datasets in ArrayRecord, written without TensorFlow and never half-written.

A dataset directory holds a JSON manifest (what determines its bytes) beside the TFDS data
directory; it is built in a staging directory next to its destination and renamed into place
only once complete. Examples are encoded with the features' `encode_example`, serialized with
TFDS's `ExampleSerializer` and written with array_record's writer, one shard per split.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator

import tensorflow_datasets as tfds

FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def shard_path(data_dir: str, name: str, split: str) -> str:
    """The single shard of `split`, named as FILENAME_TEMPLATE says."""
    return os.path.join(data_dir, f"{name}-{split}.array_record-00000-of-00001")


def example_serializer(features: tfds.features.FeaturesDict):
    from tensorflow_datasets.core import example_serializer as serializers
    return serializers.ExampleSerializer(features.get_serialized_info())


def record_writer(path: str):
    """An ArrayRecord writer with one record per group (fast random access); close it when done."""
    from array_record.python import array_record_module
    return array_record_module.ArrayRecordWriter(path, "group_size:1")


def read_manifest(directory: str, filename: str) -> dict | None:
    """The manifest `filename` in `directory` as written by `write_manifest`, or None if absent."""
    path = os.path.join(directory, filename)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_manifest(directory: str, filename: str, manifest: dict) -> None:
    with open(os.path.join(directory, filename), "w") as f:
        json.dump(manifest, f, indent=2)


def is_empty_or_absent(directory: str) -> bool:
    return not (os.path.isdir(directory) and os.listdir(directory))


@contextlib.contextmanager
def built_aside(out_dir: str, prefix: str) -> Iterator[str]:
    """Yields a new staging directory beside `out_dir`. When the block succeeds the staging
    directory replaces `out_dir`, which must then be absent or empty; when it fails the staging
    directory is deleted and `out_dir` is left as it was."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        yield staging
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.chmod(staging, 0o755)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
