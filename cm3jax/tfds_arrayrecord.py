"""TFDS datasets in ArrayRecord, written without TensorFlow.

Examples are encoded with the features' `encode_example`, serialized with TFDS's
`ExampleSerializer` and written with array_record's writer, one shard per split. Build the
dataset directory aside (`fileio.built_aside`) with its manifest (`manifest.ManifestSpec`).
"""

from __future__ import annotations

import os
from typing import Iterable

import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.core import example_serializer as serializers

FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def shard_path(data_dir: str, name: str, split: str) -> str:
    """The single shard of `split`, named as FILENAME_TEMPLATE says."""
    return os.path.join(data_dir, f"{name}-{split}.array_record-00000-of-00001")


def example_serializer(features: tfds.features.FeaturesDict) -> serializers.ExampleSerializer:
    return serializers.ExampleSerializer(features.get_serialized_info())


def record_writer(path: str) -> array_record_module.ArrayRecordWriter:
    """An ArrayRecord writer with one record per group (fast random access); close it when done."""
    return array_record_module.ArrayRecordWriter(path, "group_size:1")


def write_split(data_dir: str, name: str, split: str, records: Iterable[bytes]) -> tfds.core.SplitInfo:
    """Writes serialized examples as the single shard of `split`; returns its SplitInfo."""
    path = shard_path(data_dir, name, split)
    writer = record_writer(path)
    count = 0
    try:
        for record in records:
            writer.write(record)
            count += 1
    finally:
        writer.close()
    return tfds.core.SplitInfo(name=split, shard_lengths=[count], num_bytes=os.path.getsize(path))


def write_metadata(data_dir: str, features: tfds.features.FeaturesDict, split_infos: list[tfds.core.SplitInfo],
                   version: str, description: str, metadata: dict) -> None:
    """TFDS's dataset_info.json and features.json, so `tfds.builder_from_directory(data_dir)` reads
    the splits back in the order they were written."""
    tfds.folder_dataset.write_metadata(
        data_dir=data_dir, features=features, split_infos=split_infos, version=version,
        filename_template=FILENAME_TEMPLATE, check_data=False, description=description,
        metadata=tfds.core.MetadataDict(**metadata), disable_shuffling=True,
    )
