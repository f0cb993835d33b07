"""`cm3jax import chameleon` and `cm3jax export chameleon`: Hugging Face Chameleon / Anole
checkpoints <-> cm3jax decoder checkpoints.

An import is a run directory like any other (`generate`, `caption`, `answer`, `edit` load it):

    OUT/checkpoints/0/   params, config (the Chameleon switches), vocab (Chameleon's)
    OUT/tokenizer.json   Chameleon's BPE, as given
    OUT/vqgan/           the image tokenizer: the full taming VQ-GAN given by --vqgan, or else the
                         encoder inside the Hugging Face checkpoint (codes from pixels, not back)
    OUT/import.json      where it came from

It is built in OUT.partial and renamed into place only when complete: a failed import writes
nothing to OUT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import tempfile
import time
from typing import Sequence

import ml_collections
import numpy as np
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.chameleon.hf_config import check_exportable, decoder_fields, hf_fields
from cm3jax.chameleon.text import ChameleonTextTokenizer
from cm3jax.chameleon.vocabulary import ChameleonVocab, image_token_name
from cm3jax.chameleon.tensors import plan
from cm3jax.chameleon.weights import VQ_PREFIX, hf_tensors, write_decoder, write_sharded
from cm3jax.config import decoder_config, decoder_experiment, from_json_dict, with_found_paths, with_recorded_paths
from cm3jax.data.tokenizers import is_chameleon_tokenizer, vocab_from_json
from cm3jax.errors import UserError
from cm3jax.image_tokenizer import chameleon as vq_import
from cm3jax.image_tokenizer.checkpoints import load_tokenizer
from cm3jax.image_tokenizer.pretokenize import tokenizer_fingerprint
from cm3jax.manifest import read_json
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sharding import make_mesh

TOKENIZER_FILE = "tokenizer.json"
VQGAN_DIR = "vqgan"
RECORD_FILE = "import.json"
FIX = "give the directory of a Hugging Face Chameleon checkpoint (config.json, safetensors, tokenizer.json)"


@contextlib.contextmanager
def _built_in_place(out: str):
    """A fresh directory beside `out` to build in, renamed to `out` when the block completes and
    removed when it fails, so that `out` never holds a partial result. An existing `out` that is
    not an empty directory is refused before anything is written."""
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise UserError(f"{out} already exists; choose a new --out (nothing was written).")
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(out)) + ".partial-", dir=parent)
    try:
        yield partial
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _load_vqgan(source: str, hf: dict, vqgan: str | None):
    """(the VQ-GAN, whether it decodes): the taming checkpoint given, or the HF file's encoder."""
    if vqgan is None:
        model = vq_import.load_safetensors(source, vq_import.config_from_hf(hf), prefix=VQ_PREFIX, encoder_only=True)
        return model, False
    if os.path.isdir(vqgan):
        yaml_path, ckpt = os.path.join(vqgan, "vqgan.yaml"), os.path.join(vqgan, "vqgan.ckpt")
    else:
        yaml_path, ckpt = os.path.join(os.path.dirname(vqgan), "vqgan.yaml"), vqgan
    config = vq_import.config_from_taming_yaml(yaml_path)
    if ckpt.endswith(".safetensors"):
        return vq_import.load_safetensors(ckpt, config), True
    with tempfile.TemporaryDirectory() as tmp:
        converted = vq_import.convert_taming_ckpt(ckpt, os.path.join(tmp, "vqgan.safetensors")).out_path
        return vq_import.load_safetensors(converted, config), True


def _save_vqgan(model, workdir: str) -> None:
    config = {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}}
    state = nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))
    with Checkpoints(workdir, async_save=False) as checkpoints:
        checkpoints.save(0, {"params": state, "config": Json(config)})


def import_chameleon(source: str, out: str, vqgan: str | None = None, mesh_shape: Sequence[int] | None = None,
                     progress: bool = True) -> dict:
    """Writes the cm3jax run directory `out` holding the Hugging Face Chameleon checkpoint at
    `source`; returns the import record. `mesh_shape` (data, fsdp, tensor) spreads each tensor over
    the devices as training shards it, so no device holds more than its part (default: the first
    device holds everything)."""
    start = time.perf_counter()
    if not os.path.isdir(source):
        raise UserError(f"{source} is not a directory; {FIX}.")
    where = os.path.join(source, "config.json")
    hf = read_json(where, "The Chameleon config", FIX)
    model_config = DecoderConfig(**decoder_fields(hf, where))
    tokenizer_path = os.path.join(source, TOKENIZER_FILE)
    text = ChameleonTextTokenizer.load(tokenizer_path)
    vocabulary = text.vocabulary()
    differing = sorted(k for k, i in (hf.get("vocabulary_map") or {}).items() if vocabulary.get(k) != i)
    if differing:
        raise UserError(f"{tokenizer_path} is not the tokenizer of {where}: {len(differing)} entries of the config's "
                        f"vocabulary_map have other ids in it (e.g. {', '.join(map(repr, differing[:3]))}); use the "
                        f"files of one checkpoint.")
    if len(vocabulary) > model_config.vocab_size:
        raise UserError(f"{tokenizer_path} has {len(vocabulary)} entries but {where} says vocab_size "
                        f"{model_config.vocab_size}.")
    image_model, decodes = _load_vqgan(source, hf, vqgan)
    grid = image_model.config.grid_size()
    vocab = ChameleonVocab.from_map(vocabulary, text.special_tokens, grid * grid, text.fingerprint,
                                    tokenizer_fingerprint(image_model), where=tokenizer_path)
    if vocab.image_codebook_size != image_model.config.codebook_size:
        raise UserError(f"{tokenizer_path} names {vocab.image_codebook_size} image codes but the VQ-GAN has "
                        f"{image_model.config.codebook_size}; pass the checkpoint's own --vqgan.")
    with _built_in_place(out) as partial:
        text.save(os.path.join(partial, TOKENIZER_FILE))
        _save_vqgan(image_model, os.path.join(partial, VQGAN_DIR))
        config = decoder_experiment(dataclasses.asdict(model_config))
        config.data = ml_collections.ConfigDict({"text_tokenizer": os.path.join(partial, TOKENIZER_FILE),
                                                 "image_tokenizer": os.path.join(partial, VQGAN_DIR),
                                                 "image_decoder": decodes})
        with Checkpoints(partial, async_save=False) as checkpoints:
            checkpoints.save(0, {"config": Json(with_recorded_paths(config, partial)), "vocab": Json(vocab.to_json())})
            mesh = make_mesh(mesh_shape) if mesh_shape else None
            parameters = write_decoder(source, model_config, os.path.join(checkpoints.where(0), "params"), mesh,
                                       progress=progress)
        record = {"source": os.path.abspath(source), "vqgan": os.path.abspath(vqgan) if vqgan else None,
                  "image_decoder": decodes, "tensors": len(plan(model_config)), "parameters": parameters,
                  "seconds": round(time.perf_counter() - start, 1)}
        with open(os.path.join(partial, RECORD_FILE), "w") as f:
            json.dump(record, f, indent=2)
    return record


def _vocabulary_map(vocab, size: int) -> tuple[dict[str, int], dict[str, int]]:
    """(vocabulary_map, the config's special token ids) for a model's vocabulary of either kind."""
    if isinstance(vocab, ChameleonVocab):
        return dict(vocab.vocabulary), {"bos_token_id": vocab.bos_id, "eos_token_id": vocab.eos_id,
                                        "pad_token_id": vocab.pad_id}
    names = {i: name for i, name in enumerate(vocab.specials)}
    names.update({int(vocab.image_ids([c])[0]): image_token_name(c) for c in range(vocab.image_codebook_size)})
    mapping = {names.get(i, f"<cm3jax:{i}>"): i for i in range(size)}  # text pieces: cm3jax's tokenizer's
    return mapping, {"eos_token_id": vocab.eos_id, "pad_token_id": vocab.pad_id}


def _vq_encoder(image_tokenizer: str) -> tuple[dict | None, list[tuple[str, np.ndarray]]]:
    """(vq_config, model.vqmodel.* tensors) of a run's image tokenizer when it is a taming VQ-GAN
    (Chameleon's kind); (None, []) for one Hugging Face cannot hold (the patch encoder)."""
    model, _ = load_tokenizer(image_tokenizer)
    c = model.config
    if c.encoder != "conv" or c.norm_groups != vq_import.TAMING_NORM_GROUPS:
        return None, []
    vq_config = dict(embed_dim=c.embed_dim, num_embeddings=c.codebook_size, latent_channels=c.z_channels,
                     resolution=c.resolution, in_channels=c.in_channels, base_channels=c.base_channels,
                     channel_multiplier=list(c.channel_multipliers), num_res_blocks=c.num_res_blocks,
                     attn_resolutions=list(c.attn_resolutions), double_latent=False, attn_type="vanilla")
    tensors = [(VQ_PREFIX + name, array) for name, array in vq_import.taming_tensors(model, decoder=False).items()]
    return vq_config, tensors


def export_chameleon(workdir: str, out: str, max_shard_bytes: int = 5 * 2 ** 30) -> dict:
    """Writes the newest decoder checkpoint of `workdir` as a Hugging Face Chameleon checkpoint in
    `out` (config.json, safetensors shards with their index, the tokenizer.json of an imported model).
    A taming VQ-GAN image tokenizer goes along as `model.vqmodel.*` (its encoder: Hugging Face keeps
    no decoder); another kind (the Shapes patch encoder) is left out, and transformers then
    initialises that part at random."""
    checkpoints, step = Checkpoints.open_latest(workdir, "decoder", f"cm3jax train --workdir {workdir}")
    with checkpoints:
        saved = checkpoints.restore(step, {"config": Json(), "vocab": Json()})
        config = with_found_paths(from_json_dict(saved["config"]), workdir)
        model_config = decoder_config(config)
        check_exportable(model_config)
        vocab = vocab_from_json(saved["vocab"])
        model = checkpoints.restore_module(step, lambda: Decoder(model_config, nnx.Rngs(0)), as_state=True)
    mapping, special_ids = _vocabulary_map(vocab, model_config.vocab_size)
    with _built_in_place(out) as partial:
        data = config.get("data", {})
        vq_config, vq_tensors = _vq_encoder(data["image_tokenizer"]) if data.get("image_tokenizer") else (None, [])
        named = itertools.chain(hf_tensors(nnx.state(model, nnx.Param), model_config), vq_tensors)
        files = write_sharded(named, partial, max_shard_bytes)
        fields = hf_fields(dataclasses.replace(model_config, scan_layers=False), mapping, special_ids, vq_config)
        with open(os.path.join(partial, "config.json"), "w") as f:
            json.dump(fields, f, indent=2)
        if is_chameleon_tokenizer(data.get("text_tokenizer", "")):
            shutil.copyfile(data["text_tokenizer"], os.path.join(partial, TOKENIZER_FILE))
            files.append(TOKENIZER_FILE)
    return {"out": os.path.abspath(out), "step": step, "files": files}
