"""The Shapes world's retrieval stages with a toy embedder: make_index indexes a saved bank,
make_neighbours stores each split's neighbours, and retrieval_inputs gives the bank and those
rows to a decoder run, or names the missing piece before any training. (make_bank needs a
trained CLIP and is exercised by the command-line tests.)"""

import dataclasses

import numpy as np
import pytest
from ml_collections import ConfigDict

from cm3jax.errors import UserError
from cm3jax.retrieval.bank import ShapesBankOptions, build_shapes_bank
from cm3jax.retrieval.index import load_index
from cm3jax.retrieval.shapes_memory import make_index, make_neighbours, retrieval_inputs
from cm3jax.shapes.dataset import make
from tests.retrieval.bank_fixtures import TOY, WORLD, fake_codes, make_codec, make_world
from tests.retrieval.toy_embedder import ToyEmbedder


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    world = make_world(str(tmp_path_factory.mktemp("world") / "shapes"))
    return build_shapes_bank(world, fake_codes(world), make_codec(), ToyEmbedder(), embedder_record=TOY,
                             options=ShapesBankOptions(seed=3), progress=False), world


@pytest.fixture(scope="module")
def stages(bank, tmp_path_factory):
    """A saved bank, its exact index and the neighbours of a 4-scene train split."""
    bank, _ = bank
    root = tmp_path_factory.mktemp("stages")
    bank.save(str(root / "bank"))
    index, manifest = make_index(str(root / "bank"), str(root / "index"), backend="exact")
    world = str(root / "shapes")
    make(world, dataclasses.replace(WORLD, num_train=4, num_eval=2), workers=1, progress=False)
    found = make_neighbours(str(root / "index"), world, ["train", "eval"], str(root / "neighbours"), progress=False)
    return root, world, index, manifest, found


def test_make_index_indexes_the_banks_keys(bank, stages):
    bank, _ = bank
    root, _, index, manifest, _ = stages
    assert index.backend == "exact" and index.size == len(bank)
    assert manifest["bank"]["fingerprint"] == bank.fingerprint
    assert manifest["bank"]["path"] == str(root / "bank")
    loaded, _ = load_index(str(root / "index"))
    ids, scores = loaded.search(bank.keys_ND[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2] and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(UserError):
        make_index(str(root / "bank"), str(root / "index"), backend="exact")


def test_make_neighbours_stores_rows_for_each_split(stages):
    *_, found = stages
    assert found["train"]["examples"] == 4 and found["eval"]["examples"] == 2
    assert all(0 < found[s]["neighbours_per_example"] for s in ("train", "eval"))


def test_retrieval_inputs_give_the_bank_and_the_rows_of_each_split(bank, stages):
    bank, _ = bank
    root, world, *_ = stages
    config = ConfigDict({"data": {"retrieval_bank": str(root / "bank"), "neighbours": str(root / "neighbours"),
                                  "shapes_dir": world}})
    loaded, rows = retrieval_inputs(config, make_codec())
    assert loaded.fingerprint == bank.fingerprint
    assert sorted(rows) == ["eval", "train"], "the empty emblems_unseen split is left out"
    assert rows["train"].shape[0] == 4 and rows["eval"].shape[0] == 2
    assert ((rows["train"] >= -1) & (rows["train"] < len(bank))).all()


def test_retrieval_inputs_name_what_is_missing_before_training(bank, tmp_path):
    bank, _ = bank
    world = str(tmp_path / "shapes")
    make(world, dataclasses.replace(WORLD, num_train=4), workers=1, progress=False)
    config = ConfigDict({"data": {"retrieval_bank": "", "neighbours": "", "shapes_dir": world}})
    assert retrieval_inputs(config, make_codec()) is None
    config.data.retrieval_bank = str(tmp_path / "bank")
    with pytest.raises(UserError, match="data.neighbours is not"):
        retrieval_inputs(config, make_codec())
    config.data.neighbours = str(tmp_path / "neighbours")
    with pytest.raises(UserError, match="bank"):
        retrieval_inputs(config, make_codec())
    bank.save(config.data.retrieval_bank)
    with pytest.raises(UserError, match="No neighbours in .*cm3jax retrieval neighbours"):
        retrieval_inputs(config, make_codec())
