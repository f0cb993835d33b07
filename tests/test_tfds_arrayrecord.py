import os

import numpy as np
import tensorflow_datasets as tfds

from cm3jax.tfds_arrayrecord import example_serializer, shard_path, write_metadata, write_split

FEATURES = tfds.features.FeaturesDict({"id": tfds.features.Text(),
                                       "x": tfds.features.Tensor(shape=(2,), dtype=np.int32, encoding="bytes")})


def test_written_splits_read_back_in_order(tmp_path):
    data_dir = str(tmp_path / "toy" / "1.0.0")
    os.makedirs(data_dir)
    serializer = example_serializer(FEATURES)
    examples = [{"id": f"e{i}", "x": np.array([i, -i], np.int32)} for i in range(5)]
    infos = [write_split(data_dir, "toy", split, (serializer.serialize_example(FEATURES.encode_example(e))
                                                  for e in chosen))
             for split, chosen in (("train", examples), ("eval", examples[:2]))]
    assert [i.num_examples for i in infos] == [5, 2]
    assert os.path.isfile(shard_path(data_dir, "toy", "train"))
    write_metadata(data_dir, FEATURES, infos, "1.0.0", "a toy", {"made_by": "test"})
    builder = tfds.builder_from_directory(data_dir)
    assert builder.info.metadata["made_by"] == "test"
    source = builder.as_data_source(split="train")
    assert [source[i]["id"] for i in range(len(source))] == [f"e{i}".encode() for i in range(5)]
    np.testing.assert_array_equal(source[3]["x"], [3, -3])
    assert len(builder.as_data_source(split="eval")) == 2
