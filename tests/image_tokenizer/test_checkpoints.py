"""A tokenizer run's checkpoints: save/restore round-trip the state, optimizer state and recipe;
latest_step and load_tokenizer find the newest step; and a missing, empty, corrupt or foreign
checkpoint is refused with a message naming it and the fix."""

import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json, checkpoint_dir
from cm3jax.errors import UserError
from cm3jax.image_tokenizer import checkpoints
from cm3jax.image_tokenizer.checkpoints import latest_step, load_tokenizer
from tests.image_tokenizer.conftest import STEP, save_tiny_tokenizer, tiny_config


def _same_params(a, b):
    left, right = nnx.to_pure_dict(nnx.state(a)), nnx.to_pure_dict(nnx.state(b))
    assert jax.tree.structure(left) == jax.tree.structure(right)
    for x, y in zip(jax.tree.leaves(left), jax.tree.leaves(right)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_load_tokenizer_gives_the_saved_model_and_recipe(tiny_tokenizer):
    workdir, model = tiny_tokenizer
    assert latest_step(workdir) == STEP
    loaded, config = load_tokenizer(workdir)
    _same_params(loaded, model)
    assert config.model.codebook_size == 32


def test_config_round_trips_through_the_checkpoint(tiny_tokenizer):
    with Checkpoints(tiny_tokenizer[0], read_only=True) as store:
        saved = checkpoints.restore_config(store, STEP)
    assert json.loads(saved.to_json()) == json.loads(tiny_config().to_json())


def test_save_and_restore_round_trip_the_training_state(tmp_path):
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    state = {"params": params, "step": np.asarray(7, np.int32), "code_age": np.arange(4, dtype=np.int32)}
    opt_state = {"params": {"mu": np.ones(3, np.float32)}}
    with Checkpoints(str(tmp_path)) as store:
        checkpoints.save(store, 7, state, opt_state, tiny_config())
    with Checkpoints(str(tmp_path), read_only=True) as store:
        got_state, got_opt = checkpoints.restore(store, 7, state, opt_state)
    assert sorted(got_state) == ["code_age", "params", "step"] and sorted(got_opt) == ["params"]
    np.testing.assert_array_equal(got_state["params"]["w"], params["w"])
    np.testing.assert_array_equal(got_state["code_age"], state["code_age"])
    assert int(got_state["step"]) == 7
    np.testing.assert_array_equal(got_opt["params"]["mu"], opt_state["params"]["mu"])


def test_latest_step_is_none_before_any_checkpoint(tmp_path):
    assert latest_step(str(tmp_path / "nothing")) is None
    os.makedirs(checkpoint_dir(str(tmp_path / "empty")))
    assert latest_step(str(tmp_path / "empty")) is None


def test_latest_step_and_load_take_the_newest_step(tmp_path):
    save_tiny_tokenizer(str(tmp_path), step=2, seed=1)
    newest = save_tiny_tokenizer(str(tmp_path), step=5, seed=2)
    assert latest_step(str(tmp_path)) == 5
    _same_params(load_tokenizer(str(tmp_path))[0], newest)


def test_load_tokenizer_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nothing")):
        load_tokenizer(str(tmp_path / "nothing"))
    os.makedirs(checkpoint_dir(str(tmp_path / "empty")))
    with pytest.raises(UserError, match="No complete tokenizer checkpoint"):
        load_tokenizer(str(tmp_path / "empty"))


def test_load_tokenizer_names_a_corrupt_checkpoint(tiny_tokenizer, tmp_path):
    workdir = str(tmp_path / "corrupt")
    shutil.copytree(tiny_tokenizer[0], workdir)
    step_dir = os.path.join(checkpoint_dir(workdir), str(STEP))
    params_dir = os.path.join(step_dir, "params")
    for root, _, files in os.walk(params_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(UserError, match=f"{re.escape(step_dir)}.*corrupt"):
        load_tokenizer(workdir)
    with open(os.path.join(step_dir, "config", "metadata"), "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match=f"{re.escape(step_dir)}.*corrupt.*Delete that step directory"):
        load_tokenizer(workdir)


def test_a_checkpoint_without_a_tokenizer_config_is_refused(tmp_path):
    with Checkpoints(str(tmp_path)) as store:
        store.save(1, {"config": Json(other="run")})
    with Checkpoints(str(tmp_path), read_only=True) as store:
        with pytest.raises(UserError, match="holds no tokenizer config; was it written by `cm3jax tokenizer image"):
            checkpoints.restore_config(store, 1)
