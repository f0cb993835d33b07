"""Loads a Hugging Face `CLIPModel` directory (config.json + model.safetensors, as
`save_pretrained` writes it; sharded `model.safetensors.index.json` too) into the NNX CLIP.

    model = load_hf_clip("path/to/clip-vit-base-patch32")

torch Linear weights are [out, in] and become NNX kernels [in, out]; the patch convolution's
[D, C, p, p] becomes [p, p, C, D]. Every tensor of the file must find its place and every
parameter must be filled, or a UserError names the ones that did not.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax import safetensors_io
from cm3jax.errors import UserError
from cm3jax.manifest import read_json
from cm3jax.retrieval.clip import CLIP, ClipConfig

CONFIG_FILE = "config.json"

# transformers' defaults for keys a config.json may leave out (CLIPTextConfig, CLIPVisionConfig).
_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                      layer_norm_eps=1e-5, eos_token_id=49407)
_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_LAYER_PARTS = {"layer_norm1": "layer_norm1", "layer_norm2": "layer_norm2", "self_attn.q_proj": "q_proj",
                "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj", "self_attn.out_proj": "out_proj",
                "mlp.fc1": "fc1", "mlp.fc2": "fc2"}


def config_from_hf(hf: dict, source: str = CONFIG_FILE) -> ClipConfig:
    """ClipConfig from the dict of a CLIPModel config.json."""
    if hf.get("model_type") not in (None, "clip"):
        raise UserError(f"{source} describes a {hf.get('model_type')!r} model, not a CLIP (model_type 'clip').")
    text = {**_TEXT_DEFAULTS, **(hf.get("text_config") or hf.get("text_config_dict") or {})}
    vision = {**_VISION_DEFAULTS, **(hf.get("vision_config") or hf.get("vision_config_dict") or {})}
    if text["layer_norm_eps"] != vision["layer_norm_eps"]:
        raise UserError(f"{source}: the towers' layer_norm_eps differ ({text['layer_norm_eps']} and "
                        f"{vision['layer_norm_eps']}); this CLIP uses one for both.")
    return ClipConfig(
        image_size=vision["image_size"], patch_size=vision["patch_size"], num_channels=vision["num_channels"],
        vision_width=vision["hidden_size"], vision_layers=vision["num_hidden_layers"],
        vision_heads=vision["num_attention_heads"], vision_mlp=vision["intermediate_size"],
        vision_activation=vision["hidden_act"],
        vocab_size=text["vocab_size"], max_length=text["max_position_embeddings"], text_width=text["hidden_size"],
        text_layers=text["num_hidden_layers"], text_heads=text["num_attention_heads"],
        text_mlp=text["intermediate_size"], text_activation=text["hidden_act"], eos_token_id=text["eos_token_id"],
        projection_dim=hf.get("projection_dim", 512), layer_norm_eps=float(text["layer_norm_eps"]),
        logit_scale_init=float(hf.get("logit_scale_init_value", math.log(1 / 0.07))),
    ).check()


def _linear_t(w: np.ndarray) -> np.ndarray:
    return w.T


def _conv_to_patch_kernel(w_DCpp: np.ndarray) -> np.ndarray:
    return w_DCpp.transpose(2, 3, 1, 0)


def weight_map(config: ClipConfig) -> dict[str, tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray]]]:
    """HF tensor name -> (NNX parameter path, transform)."""
    same = lambda w: w  # noqa: E731
    out: dict = {
        "logit_scale": (("logit_scale",), same),
        "visual_projection.weight": (("visual_projection", "kernel"), _linear_t),
        "text_projection.weight": (("text_projection", "kernel"), _linear_t),
        "vision_model.embeddings.patch_embedding.weight": (("vision_model", "patch_kernel"), _conv_to_patch_kernel),
        "vision_model.embeddings.class_embedding": (("vision_model", "class_embedding"), same),
        "vision_model.embeddings.position_embedding.weight": (("vision_model", "position_embedding"), same),
        "text_model.embeddings.token_embedding.weight": (("text_model", "token_embedding"), same),
        "text_model.embeddings.position_embedding.weight": (("text_model", "position_embedding"), same),
    }
    norms = {"vision_model.pre_layrnorm": ("vision_model", "pre_layernorm"),
             "vision_model.post_layernorm": ("vision_model", "post_layernorm"),
             "text_model.final_layer_norm": ("text_model", "final_layer_norm")}
    for tower, layers in (("vision_model", config.vision_layers), ("text_model", config.text_layers)):
        for i in range(layers):
            for hf_part, ours in _LAYER_PARTS.items():
                prefix, path = f"{tower}.encoder.layers.{i}.{hf_part}", (tower, "layers", i, ours)
                if ours.startswith("layer_norm"):
                    norms[prefix] = path
                else:
                    out[f"{prefix}.weight"] = (path + ("kernel",), _linear_t)
                    out[f"{prefix}.bias"] = (path + ("bias",), same)
    for prefix, path in norms.items():
        out[f"{prefix}.weight"] = (path + ("scale",), same)
        out[f"{prefix}.bias"] = (path + ("bias",), same)
    return out


def read_config(directory: str) -> ClipConfig:
    path = os.path.join(directory, CONFIG_FILE)
    hf = read_json(path, "The CLIP config", "re-download or re-save the model",
                   missing=f"No {CONFIG_FILE} in {directory}; give the directory a CLIPModel's save_pretrained "
                           f"wrote (config.json + model.safetensors).")
    try:
        return config_from_hf(hf, path)
    except (TypeError, KeyError) as e:
        raise UserError(f"{path} is not a CLIPModel config ({type(e).__name__}: {e}).") from None


def params_from_hf(tensors: dict[str, np.ndarray], config: ClipConfig, source: str) -> dict:
    """The NNX CLIP's pure parameter dict filled from HF tensors (checked name by name, shape by shape)."""
    abstract = nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0)))
    shapes = nnx.to_pure_dict(nnx.state(abstract))
    mapping = weight_map(config)
    ignored = {k for k in tensors if k.endswith("position_ids")}  # buffers older transformers saved
    unknown = sorted(set(tensors) - set(mapping) - ignored)
    missing = sorted(set(mapping) - set(tensors))
    if unknown or missing:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unknown:
            parts.append(f"{len(unknown)} tensors this CLIP has no place for (e.g. {', '.join(unknown[:3])})")
        raise UserError(f"{source} does not match its config.json as a CLIPModel: {'; '.join(parts)}. "
                        f"Is it a CLIPModel (not a CLIPVisionModel or another architecture) saved whole?")
    params: dict = _copy_dicts(shapes)
    for name, (path, transform) in mapping.items():
        value = transform(np.asarray(tensors[name], np.float32))
        node = params
        for key in path[:-1]:
            node = node[key]
        expected = tuple(node[path[-1]].shape)
        if value.shape != expected:
            raise UserError(f"{source}: tensor {name} has shape {tensors[name].shape}, which does not fit this "
                            f"config (expected {expected} after transposing); config.json and weights disagree.")
        node[path[-1]] = jnp.asarray(value)
    return params


def _copy_dicts(tree):
    """A copy of a nested dict (leaves shared), to be filled in place."""
    return {k: _copy_dicts(v) if isinstance(v, dict) else v for k, v in tree.items()}


def load_hf_clip(directory: str) -> CLIP:
    """The NNX CLIP holding the weights of a Hugging Face CLIPModel directory."""
    if not os.path.isdir(directory):
        raise UserError(f"{directory} is not a directory; give the folder save_pretrained wrote "
                        f"(config.json + model.safetensors).")
    config = read_config(directory)
    params = params_from_hf(safetensors_io.read_all(directory), config, directory)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0))))
    return nnx.merge(graphdef, params)
