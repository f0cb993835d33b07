"""A trained CLIP's workdir: orbax checkpoints under WORKDIR/checkpoints/STEP (items `params`,
`opt_state` and `meta`, the JSON of the recipe, the ClipConfig and the text tokenizer's
fingerprint) and WORKDIR/text.model, the tokenizer the text tower was trained with."""

from __future__ import annotations

import dataclasses
import os

import jax
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.errors import UserError
from cm3jax.retrieval.clip import CLIP, ClipConfig
from cm3jax.text_tokenizer import TextTokenizer

TOKENIZER_FILE = "text.model"
TRAIN_HINT = "train one with `cm3jax retrieval clip --config retrieval/clip_shapes.py --workdir {workdir}`"


def tokenizer_path(workdir: str) -> str:
    return os.path.join(workdir, TOKENIZER_FILE)


def meta_record(recipe: dict, config: ClipConfig, tokenizer: TextTokenizer) -> Json:
    return Json(recipe=recipe, clip_config=dataclasses.asdict(config), text_tokenizer_sha256=tokenizer.fingerprint)


def abstract_params(config: ClipConfig) -> dict:
    """Shapes and dtypes of the CLIP's parameters, placed on this process's first device."""
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0)))))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local), abstract)


def open_checkpoints(workdir: str) -> tuple[Checkpoints, int]:
    """The workdir's checkpoints (read only) and its newest complete step."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        raise UserError(f"No CLIP checkpoints in {directory}: the directory does not exist; "
                        f"{TRAIN_HINT.format(workdir=workdir)}.")
    checkpoints = Checkpoints(workdir, read_only=True)
    step = checkpoints.latest_step()
    if step is None:
        checkpoints.close()
        raise UserError(f"No complete CLIP checkpoint in {directory} (no finished step directory); "
                        f"{TRAIN_HINT.format(workdir=workdir)}.")
    return checkpoints, step


def read_meta(checkpoints: Checkpoints, step: int) -> dict:
    meta = checkpoints.restore(step, {"meta": Json()})["meta"]
    if not isinstance(meta, dict) or not {"recipe", "clip_config", "text_tokenizer_sha256"} <= set(meta):
        raise UserError(f"Checkpoint {checkpoints.directory}/{step} holds no CLIP record; was it written by "
                        f"cm3jax.retrieval.clip_train?")
    return meta


def clip_config_of(meta: dict, where: str) -> ClipConfig:
    try:
        return ClipConfig(**meta["clip_config"]).check()
    except TypeError as e:
        raise UserError(f"The CLIP config in {where} does not fit this version of cm3jax ({e}); train again.") from None


def load_trained(workdir: str) -> tuple[CLIP, TextTokenizer, dict]:
    """(CLIP of the newest checkpoint, its text tokenizer, the checkpoint's meta record)."""
    checkpoints, step = open_checkpoints(workdir)
    try:
        meta = read_meta(checkpoints, step)
        config = clip_config_of(meta, f"{checkpoints.directory}/{step}")
        params = checkpoints.restore(step, {"params": abstract_params(config)})["params"]
    finally:
        checkpoints.close()
    tokenizer = TextTokenizer.load(tokenizer_path(workdir))
    if tokenizer.fingerprint != meta["text_tokenizer_sha256"]:
        raise UserError(f"{tokenizer_path(workdir)} is not the text tokenizer this CLIP was trained with (sha256 "
                        f"{tokenizer.fingerprint[:12]}, checkpoint expects {meta['text_tokenizer_sha256'][:12]}); "
                        f"restore that file or train again.")
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0))))
    return nnx.merge(graphdef, params), tokenizer, meta
