"""Import Chameleon's VQ-GAN image tokenizer into our Flax `VQGAN`.

Chameleon ships its tokenizer as a taming-transformers `VQModel` checkpoint (`vqgan.ckpt`, a
torch pickle `{"state_dict": ...}`, and `vqgan.yaml`); Hugging Face's `ChameleonVQVAE` keeps
the encoder side of it in safetensors, unprefixed standalone or under `model.vqmodel.` inside
a full Chameleon checkpoint. Both use taming's tensor names, so one loader serves both:
`convert_taming_ckpt` turns the pickle into safetensors once (torch needed only there), and
`load_safetensors` reads either file into a Flax model, checking every name and shape.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from typing import Any, Iterable, Mapping

import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from cm3jax import safetensors_io
from cm3jax.errors import UserError
from cm3jax.fileio import atomic_write_bytes
from cm3jax.image_tokenizer.model import VQGAN, PixelDecoder, VQGANConfig
from cm3jax.manifest import read_json
from cm3jax.safetensors_io import Entry

# taming's `Normalize` and HF's port both hard-code GroupNorm(32 groups).
TAMING_NORM_GROUPS = 32
FULL_CHECKPOINT_PREFIX = "model.vqmodel."
TRAINING_ONLY_PREFIXES = ("loss.", "discriminator.")
DECODER_PREFIX = "decoder."
_MAX_LISTED = 8


# ----------------------------------------------------------------------------------- configs

def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; check the path.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"Cannot read {what} {path}: {e}.") from None


def _int_tuple(value: Any, key: str, source: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
        raise UserError(f"{source}: {key} must be a list of integers, got {value!r}.")
    return tuple(value)


def _required(mapping: Mapping, key: str, source: str) -> Any:
    if key not in mapping:
        raise UserError(f"{source} has no {key!r}; is it a taming VQModel config (vqgan.yaml)?")
    return mapping[key]


def config_from_taming_yaml(path: str) -> VQGANConfig:
    """The `VQGANConfig` of a taming `VQModel` described by `vqgan.yaml` (model.params)."""
    try:
        doc = yaml.safe_load(_read_text(path, "taming config"))
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {e}") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("params"), dict):
        raise UserError(f"{path} has no model.params section; expected a taming vqgan.yaml.")
    target = model.get("target", "taming.models.vqgan.VQModel")
    if not str(target).endswith(".VQModel"):
        raise UserError(f"{path}: model.target is {target}; only taming.models.vqgan.VQModel "
                        "(nearest-neighbour VectorQuantizer2) can be imported.")
    params = model["params"]
    if params.get("remap") is not None:
        raise UserError(f"{path}: model.params.remap is set; remapped codebooks are not supported.")
    dd = _required(params, "ddconfig", path)
    # taming's Encoder defaults to double_z=True, which VQModel's quant_conv cannot take.
    if dd.get("double_z", True):
        raise UserError(f"{path}: ddconfig.double_z must be false for a VQModel (its quant_conv "
                        "takes z_channels); set `double_z: false` if the checkpoint was trained so.")
    if not dd.get("resamp_with_conv", True) or dd.get("give_pre_end", False):
        raise UserError(f"{path}: resamp_with_conv=false and give_pre_end=true are not supported.")
    return VQGANConfig(
        resolution=int(_required(dd, "resolution", path)),
        in_channels=int(_required(dd, "in_channels", path)),
        out_channels=int(_required(dd, "out_ch", path)),
        base_channels=int(_required(dd, "ch", path)),
        channel_multipliers=_int_tuple(_required(dd, "ch_mult", path), "ch_mult", path),
        num_res_blocks=int(_required(dd, "num_res_blocks", path)),
        attn_resolutions=_int_tuple(_required(dd, "attn_resolutions", path), "attn_resolutions", path),
        z_channels=int(_required(dd, "z_channels", path)),
        embed_dim=int(_required(params, "embed_dim", path)),
        codebook_size=int(_required(params, "n_embed", path)),
        norm_groups=TAMING_NORM_GROUPS,
        beta=0.25,  # VQModel hard-codes it
    )


# Defaults of transformers.ChameleonVQVAEConfig, for keys a config.json leaves out.
_HF_DEFAULTS = {"embed_dim": 256, "num_embeddings": 8192, "double_latent": False, "latent_channels": 256,
                "resolution": 512, "in_channels": 3, "base_channels": 128, "channel_multiplier": (1, 1, 2, 2, 4),
                "num_res_blocks": 2, "attn_resolutions": None, "attn_type": "vanilla"}


def config_from_hf(source: str | Mapping[str, Any]) -> VQGANConfig:
    """The `VQGANConfig` of a Hugging Face `ChameleonVQVAEConfig`: a dict, a config.json path or
    a directory holding one. A full `ChameleonConfig` works too (its `vq_config` is used)."""
    if isinstance(source, Mapping):
        raw, where = dict(source), "Chameleon VQ config"
    else:
        where = os.path.join(source, "config.json") if os.path.isdir(source) else source
        raw = read_json(where, "Hugging Face config", "pass the config.json of a ChameleonVQVAE or Chameleon "
                        "checkpoint")
    if isinstance(raw.get("vq_config"), Mapping):
        raw = dict(raw["vq_config"])
    c = {**_HF_DEFAULTS, **{k: v for k, v in raw.items() if k in _HF_DEFAULTS}}
    if c["double_latent"]:
        raise UserError(f"{where}: double_latent=true is not supported (the VQ-VAE's quant_conv "
                        "takes latent_channels, so such a model cannot run).")
    if c["attn_type"] != "vanilla":
        raise UserError(f"{where}: attn_type={c['attn_type']!r}; only 'vanilla' attention is supported.")
    try:
        return VQGANConfig(
            resolution=int(c["resolution"]),
            in_channels=int(c["in_channels"]),
            out_channels=int(c["in_channels"]),  # HF keeps no decoder; Chameleon decodes to RGB
            base_channels=int(c["base_channels"]),
            channel_multipliers=_int_tuple(c["channel_multiplier"], "channel_multiplier", where),
            num_res_blocks=int(c["num_res_blocks"]),
            attn_resolutions=_int_tuple(c["attn_resolutions"], "attn_resolutions", where),
            z_channels=int(c["latent_channels"]),
            embed_dim=int(c["embed_dim"]),
            codebook_size=int(c["num_embeddings"]),
            norm_groups=TAMING_NORM_GROUPS,
        )
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: a size field is not an integer ({e}).") from None


# ------------------------------------------------------------------------------------- names

@dataclasses.dataclass(frozen=True)
class Layout:
    """How a torch tensor's axes become ours: ours = torch.transpose(torch_to_flax)."""

    torch_to_flax: tuple[int, ...] = ()

    def to_flax(self, torch_array):
        return torch_array.transpose(self.torch_to_flax) if self.torch_to_flax else torch_array

    def to_torch(self, flax_array):
        return flax_array.transpose(np.argsort(self.torch_to_flax)) if self.torch_to_flax else flax_array

    def torch_shape(self, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not self.torch_to_flax:
            return tuple(flax_shape)
        return tuple(flax_shape[self.torch_to_flax.index(axis)] for axis in range(len(flax_shape)))


SAME = Layout()
CONV = Layout((2, 3, 1, 0))  # torch [out, in, kh, kw] -> ours [kh, kw, in, out]


def torch_name(path: tuple[str | int, ...]) -> tuple[str, Layout]:
    """The taming / Hugging Face name and layout of one of our parameters, given its flat NNX
    path, e.g. ("encoder", "down", 0, "resample", "conv", "kernel") ->
    ("encoder.down.0.downsample.conv.weight", CONV)."""
    parts = [str(p) for p in path]
    if parts == ["quantize", "embedding"]:
        return "quantize.embedding.weight", SAME
    if "resample" in parts:
        parts[parts.index("resample")] = "downsample" if parts[0] == "encoder" else "upsample"
    leaf = parts[-1]
    if leaf == "kernel":
        return ".".join(parts[:-1] + ["weight"]), CONV
    if leaf == "scale":  # GroupNorm
        return ".".join(parts[:-1] + ["weight"]), SAME
    if leaf == "bias":
        return ".".join(parts), SAME
    raise ValueError(f"no taming name for parameter {'.'.join(parts)}")


def taming_tensors(model: VQGAN, decoder: bool = True) -> dict[str, np.ndarray]:
    """The model's weights under taming's names in torch layout, float32 (without `decoder.*`
    when `decoder` is False: what Hugging Face's ChameleonVQVAE holds)."""
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name, layout = torch_name(path)
        if decoder or not name.startswith(DECODER_PREFIX):
            out[name] = np.ascontiguousarray(layout.to_torch(np.asarray(variable.get_value(), np.float32)))
    return out


# ----------------------------------------------------------------------------- safetensors

class ImportedVQGAN(VQGAN):
    """A `VQGAN` whose weights came from a checkpoint. `decoder_loaded` is False when the file
    held only the encoder side (Hugging Face's `ChameleonVQVAE`): the decoder is then freshly
    initialised, so `decode` gives noise while `encode` is exact."""

    def __init__(self, config: VQGANConfig, rngs: nnx.Rngs, *, decoder_loaded: bool = True):
        super().__init__(config, rngs)
        self.decoder_loaded = decoder_loaded


def _resolve_prefix(names: Iterable[str], prefix: str | None) -> str:
    if prefix is None:
        return FULL_CHECKPOINT_PREFIX if any(n.startswith(FULL_CHECKPOINT_PREFIX) for n in names) else ""
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return ", ".join(names[:_MAX_LISTED]) + more


def _check_against(path: str, prefix: str, found: dict[str, Entry],
                   wanted: dict[str, tuple[nnx.Param, Layout]]) -> set[str]:
    """Raise a UserError naming every missing, unexpected or mis-shaped tensor, except a wholly
    absent decoder: return the names of those (empty when the file holds a decoder)."""
    has_decoder = any(n.startswith(DECODER_PREFIX) for n in found)
    missing = wanted.keys() - found.keys()
    absent_decoder = set() if has_decoder else {n for n in missing if n.startswith(DECODER_PREFIX)}
    problems = []
    if missing - absent_decoder:
        problems.append(f"missing {_listing(missing - absent_decoder)}")
    if found.keys() - wanted.keys():
        problems.append(f"unexpected {_listing(found.keys() - wanted.keys())}")
    for name in sorted(wanted.keys() & found.keys()):
        var, layout = wanted[name]
        expected = layout.torch_shape(var.get_value().shape)
        if found[name].shape != expected:
            problems.append(f"{prefix}{name} has shape {list(found[name].shape)}, expected {list(expected)}")
        elif found[name].dtype not in ("F16", "BF16", "F32", "F64"):
            problems.append(f"{prefix}{name} has dtype {found[name].dtype}, expected floating point")
    if problems:
        raise UserError(f"{path} does not match the VQ-GAN config: " + "; ".join(problems) +
                        ". Build the config from the checkpoint's own vqgan.yaml / config.json "
                        "(config_from_taming_yaml / config_from_hf).")
    return absent_decoder


def _fill(found: dict[str, Entry], wanted: dict[str, tuple[nnx.Param, Layout]]) -> None:
    names = sorted(wanted.keys() & found.keys())
    tensors = safetensors_io.read(found[name] for name in names)
    for name in names:
        var, layout = wanted[name]
        # Layout changes run in numpy, so loading compiles nothing.
        tensor = np.asarray(tensors[found[name].key]).astype(np.float32)
        var.set_value(jnp.asarray(np.ascontiguousarray(layout.to_flax(tensor))))


def load_safetensors(path: str, config: VQGANConfig, prefix: str | None = None, *,
                     encoder_only: bool = False, seed: int = 0) -> ImportedVQGAN:
    """A Flax VQ-GAN holding the weights of a taming-named safetensors checkpoint.

    `path`: a .safetensors file, a sharded checkpoint's index .json, or a directory of either.
    `prefix`: the name prefix of the VQ-GAN's tensors; None finds `model.vqmodel.` (a full
    Chameleon checkpoint) or none (a standalone file). `encoder_only=True` accepts a file with
    no `decoder.*` tensors (Hugging Face's ChameleonVQVAE); the decoder then gets a fresh init
    (from `seed`) and the result has `decoder_loaded=False`. Weights become float32.
    """
    if config.norm_groups != TAMING_NORM_GROUPS:
        raise UserError(f"config.norm_groups is {config.norm_groups}, but taming and Hugging Face "
                        f"normalise with {TAMING_NORM_GROUPS} groups; build the config with "
                        "config_from_taming_yaml or config_from_hf.")
    entries = safetensors_io.entries(safetensors_io.weight_files(path))
    prefix = _resolve_prefix(entries, prefix)
    found = {k[len(prefix):]: e for k, e in entries.items() if k.startswith(prefix)}

    # Shapes only: every parameter is about to be overwritten, and a real init would spend
    # seconds compiling initialisers.
    model = nnx.eval_shape(lambda: ImportedVQGAN(config, nnx.Rngs(seed)))
    wanted = {}
    for p, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name, layout = torch_name(p)
        wanted[name] = (var, layout)
    if not wanted.keys() & found.keys():
        raise UserError(f"{path} holds none of the VQ-GAN's tensors under prefix {prefix!r} (e.g. "
                        f"{next(iter(wanted))}); it has {_listing(entries)}. Pass the prefix its "
                        "VQ-GAN tensors carry, e.g. prefix='model.vqmodel.'.")
    absent_decoder = _check_against(path, prefix, found, wanted)
    if absent_decoder and not encoder_only:
        raise UserError(f"{path} holds only the encoder side of the VQ-GAN (as Hugging Face's "
                        "ChameleonVQVAE does), so it cannot decode codes to pixels. Pass "
                        "encoder_only=True to load it with an untrained decoder, or convert the "
                        "original taming vqgan.ckpt with convert_taming_ckpt for the full model.")
    _fill(found, wanted)
    if absent_decoder:
        model.decoder = PixelDecoder(config, nnx.Rngs(seed))
    model.decoder_loaded = not absent_decoder
    return model


# ------------------------------------------------------------------------------ taming .ckpt

@dataclasses.dataclass(frozen=True)
class Conversion:
    out_path: str
    tensors: int
    dropped: tuple[str, ...]  # training-only tensors left out (loss / discriminator)


def _import_torch():
    """torch, which only the .ckpt conversion needs (an optional extra, so imported here)."""
    try:
        import torch
    except ImportError:
        raise UserError("Converting a taming .ckpt needs PyTorch: pip install torch==2.13.0 "
                        "--index-url https://download.pytorch.org/whl/cpu (or pip install "
                        "'cm3jax[bench]').") from None
    return torch


def _load_ckpt(torch, ckpt_path: str) -> dict:
    if not os.path.isfile(ckpt_path):
        raise UserError(f"Checkpoint {ckpt_path} does not exist; check the path.")
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if refused:
            raise UserError(
                f"{ckpt_path} holds more than tensors (a {refused.group(1)} object), and cm3jax "
                "never unpickles arbitrary objects. If you trust the file, re-save only its "
                "weights in Python: torch.save({'state_dict': torch.load(path, weights_only=False)"
                "['state_dict']}, 'vqgan-weights.ckpt'), and convert that.") from None
        raise UserError(f"{ckpt_path} is not a readable torch checkpoint ({str(e).splitlines()[0]} "
                        f"...); it may be corrupt.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"{ckpt_path} is not a readable torch checkpoint; it may be truncated or "
                        f"corrupt ({str(e).splitlines()[0]}).") from None


def convert_taming_ckpt(ckpt_path: str, out_path: str) -> Conversion:
    """Write the model tensors of a taming VQModel checkpoint (`vqgan.ckpt`) to safetensors at
    `out_path`, in torch layout under taming's names, as float32, leaving out training-only
    tensors. Read the result with `load_safetensors` and `config_from_taming_yaml`."""
    torch = _import_torch()
    from safetensors.torch import save  # needs torch, which only this conversion does

    payload = _load_ckpt(torch, ckpt_path)
    state_dict = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state_dict, dict):
        raise UserError(f"{ckpt_path} holds a {type(payload).__name__}, not a taming checkpoint "
                        "(a dict with a 'state_dict').")
    not_tensors = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise UserError(f"{ckpt_path}: state_dict entries {_listing(not_tensors)} are not tensors; "
                        "expected a taming VQModel state_dict.")
    dropped = tuple(sorted(k for k in state_dict if k.startswith(TRAINING_ONLY_PREFIXES)))
    tensors = {k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach()).contiguous().clone()
               for k, v in state_dict.items() if k not in dropped}
    if not tensors:
        raise UserError(f"{ckpt_path} holds no model tensors (only {_listing(dropped) or 'nothing'}).")
    atomic_write_bytes(out_path, save(tensors, metadata={"format": "pt", "source": os.path.basename(ckpt_path)}))
    return Conversion(out_path, len(tensors), dropped)
