import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from cm3jax.errors import UserError
from cm3jax.safetensors_io import INDEX_FILE, Entry, entries, read, read_all, weight_files

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.array([1.5, -2.0], ml_dtypes.bfloat16)
C = np.array([7], np.int64)


def sharded(directory) -> None:
    save_file({"a": A, "b": B}, str(directory / "model-00001-of-00002.safetensors"))
    save_file({"c": C}, str(directory / "model-00002-of-00002.safetensors"))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                  "c": "model-00002-of-00002.safetensors"}
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def check(tensors: dict) -> None:
    assert sorted(tensors) == ["a", "b", "c"]
    np.testing.assert_array_equal(tensors["a"], A)
    assert tensors["b"].dtype == ml_dtypes.bfloat16 and tensors["b"].tolist() == [1.5, -2.0]
    np.testing.assert_array_equal(tensors["c"], C)


def test_a_sharded_checkpoint_reads_through_its_index(tmp_path):
    sharded(tmp_path)
    (tmp_path / "stray.safetensors").write_bytes(b"not read: the index names the shards")
    assert [p.split("/")[-1] for p in weight_files(str(tmp_path))] == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    check(read_all(str(tmp_path)))
    check(read_all(str(tmp_path / INDEX_FILE)))


def test_entries_come_from_the_headers_and_read_takes_a_subset(tmp_path):
    save_file({"a": A, "b": B}, str(tmp_path / "one.safetensors"))
    found = entries([str(tmp_path / "one.safetensors")])
    assert found["a"] == Entry(str(tmp_path / "one.safetensors"), "a", (2, 3), "F32")
    assert found["b"].dtype == "BF16"
    assert list(read([found["b"]])) == ["b"]
    np.testing.assert_array_equal(read_all(str(tmp_path))["a"], A)  # a directory without an index: its files
    np.testing.assert_array_equal(read_all(str(tmp_path / "one.safetensors"))["a"], A)


def test_unreadable_checkpoints_are_named(tmp_path):
    with pytest.raises(UserError, match="nowhere.safetensors does not exist"):
        weight_files(str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(UserError, match=r"No weights file in .*pytorch_model.bin"):
        weight_files(str(tmp_path))
    (tmp_path / "broken.safetensors").write_bytes(b"\x07garbage" * 20)
    with pytest.raises(UserError, match="broken.safetensors is not a readable safetensors file"):
        read_all(str(tmp_path))
    index = tmp_path / "idx.json"
    index.write_text('{"weights": {}}')
    with pytest.raises(UserError, match="idx.json is not a safetensors index: it should be a JSON object with a weight_map"):
        weight_files(str(index))
    index.write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(UserError, match="gone.safetensors does not exist"):
        read_all(str(index))
