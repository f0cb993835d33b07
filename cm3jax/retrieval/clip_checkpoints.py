"""A trained CLIP's workdir: orbax checkpoints under WORKDIR/checkpoints/STEP (items `params`,
`opt_state` and `meta`, the JSON of the recipe, the ClipConfig and the text tokenizer's
fingerprint) and WORKDIR/text.model, the tokenizer the text tower was trained with."""

from __future__ import annotations

import dataclasses
import os

from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.errors import UserError
from cm3jax.retrieval.clip import CLIP, ClipConfig
from cm3jax.text_tokenizer import TextTokenizer

TOKENIZER_FILE = "text.model"
TRAIN_COMMAND = "cm3jax retrieval clip --config retrieval/clip_shapes.py --workdir {workdir}"


def tokenizer_path(workdir: str) -> str:
    return os.path.join(workdir, TOKENIZER_FILE)


def meta_record(recipe: dict, config: ClipConfig, tokenizer: TextTokenizer) -> Json:
    return Json(recipe=recipe, clip_config=dataclasses.asdict(config), text_tokenizer_sha256=tokenizer.fingerprint)


def read_meta(checkpoints: Checkpoints, step: int) -> dict:
    meta = checkpoints.restore(step, {"meta": Json()})["meta"]
    if not isinstance(meta, dict) or not {"recipe", "clip_config", "text_tokenizer_sha256"} <= set(meta):
        raise UserError(f"Checkpoint {checkpoints.where(step)} holds no CLIP record; was it written by "
                        f"`{TRAIN_COMMAND.format(workdir='...')}`?")
    return meta


def clip_config_of(meta: dict, where: str) -> ClipConfig:
    try:
        return ClipConfig(**meta["clip_config"]).check()
    except TypeError as e:
        raise UserError(f"The CLIP config in {where} does not fit this version of cm3jax ({e}); train again.") from None


def load_trained(workdir: str) -> tuple[CLIP, TextTokenizer, dict]:
    """(CLIP of the newest checkpoint, its text tokenizer, the checkpoint's meta record)."""
    checkpoints, step = Checkpoints.open_latest(workdir, "CLIP", TRAIN_COMMAND.format(workdir=workdir))
    with checkpoints:
        meta = read_meta(checkpoints, step)
        config = clip_config_of(meta, checkpoints.where(step))
        model = checkpoints.restore_module(step, lambda: CLIP(config, nnx.Rngs(0)))
    tokenizer = TextTokenizer.load(tokenizer_path(workdir))
    if tokenizer.fingerprint != meta["text_tokenizer_sha256"]:
        raise UserError(f"{tokenizer_path(workdir)} is not the text tokenizer this CLIP was trained with (sha256 "
                        f"{tokenizer.fingerprint[:12]}, checkpoint expects {meta['text_tokenizer_sha256'][:12]}); "
                        f"restore that file or train again.")
    return model, tokenizer, meta
