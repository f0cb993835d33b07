"""A CLIP workdir: load_trained gives the newest checkpoint's CLIP, the text tokenizer beside it
and the meta record, and refuses a missing, empty or corrupt checkpoint, a checkpoint without a
CLIP record, a config this version cannot build, and a text tokenizer it was not trained with.
The checkpoints here are written untrained (in seconds) in the layout clip_train writes."""

import dataclasses
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.errors import UserError
from cm3jax.retrieval.clip_checkpoints import TOKENIZER_FILE, clip_config_of, load_trained, read_meta, tokenizer_path
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.text_tokenizer import TextTokenizer, train_text_tokenizer
from tests.retrieval.conftest import save_untrained_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, text_model):
    workdir = str(tmp_path_factory.mktemp("clip") / "run")
    return workdir, save_untrained_clip(workdir, text_model)


def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(model)))]


def test_load_trained_gives_the_model_tokenizer_and_meta(clip_dir, text_model):
    workdir, saved = clip_dir
    assert tokenizer_path(workdir) == os.path.join(workdir, TOKENIZER_FILE)
    model, tokenizer, meta = load_trained(workdir)
    assert model.config == saved.config
    for a, b in zip(_leaves(model), _leaves(saved), strict=True):
        np.testing.assert_array_equal(a, b)
    assert tokenizer.fingerprint == TextTokenizer.load(text_model).fingerprint == meta["text_tokenizer_sha256"]
    assert meta["clip_config"] == dataclasses.asdict(saved.config)
    assert meta["recipe"]["model"]["vision_width"] == 32


def test_the_newest_step_is_loaded(tmp_path, text_model):
    workdir = str(tmp_path / "run")
    save_untrained_clip(workdir, text_model, step=1, seed=1)
    newest = save_untrained_clip(workdir, text_model, step=4, seed=2)
    for a, b in zip(_leaves(load_trained(workdir)[0]), _leaves(newest), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_or_corrupt_checkpoints_are_user_errors(clip_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist.*cm3jax retrieval clip"):
        load_trained(str(tmp_path / "nothing"))
    os.makedirs(tmp_path / "empty" / "checkpoints")
    with pytest.raises(UserError, match="No complete CLIP checkpoint"):
        load_trained(str(tmp_path / "empty"))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(clip_dir[0], corrupt)
    for root, _, files in os.walk(corrupt / "checkpoints" / "2" / "params"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")
    with pytest.raises(UserError, match="corrupt"):
        load_trained(str(corrupt))


def test_another_text_tokenizer_is_refused(clip_dir, tmp_path):
    workdir = tmp_path / "other_tokenizer"
    shutil.copytree(clip_dir[0], workdir)
    train_text_tokenizer(shapes_corpus(40), 400).save(str(workdir / "text.model"))
    with pytest.raises(UserError, match="not the text tokenizer this CLIP was trained with"):
        load_trained(str(workdir))
    os.remove(workdir / "text.model")
    with pytest.raises(UserError, match="No text tokenizer"):
        load_trained(str(workdir))


def test_a_checkpoint_without_a_clip_record_is_refused(tmp_path):
    with Checkpoints(str(tmp_path)) as store:
        store.save(1, {"meta": Json(recipe={})})
    with Checkpoints(str(tmp_path), read_only=True) as store:
        with pytest.raises(UserError, match="holds no CLIP record; was it written by `cm3jax retrieval clip"):
            read_meta(store, 1)


def test_a_config_this_version_cannot_build_is_refused(clip_dir):
    meta = load_trained(clip_dir[0])[2]
    assert clip_config_of(meta, "here") == clip_dir[1].config
    meta = {**meta, "clip_config": {**meta["clip_config"], "vision_depth": 3}}
    with pytest.raises(UserError, match="The CLIP config in here does not fit this version of cm3jax .*train again"):
        clip_config_of(meta, "here")
