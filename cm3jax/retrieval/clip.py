"""CLIP in Flax NNX, laid out as Hugging Face's `CLIPModel` (so its weights import one to one).

Image tower (ViT): a bias-free patch convolution, a class token, learned positions, a
LayerNorm before the encoder, pre-norm encoder layers (q/k/v/out projections with biases,
an MLP with quick_gelu or gelu), LayerNorm of the class token, a bias-free projection.
Text tower: token and learned position embeddings, causal self-attention, a final
LayerNorm, the state at the end-of-text token, a bias-free projection. A learned
`logit_scale` (log of the inverse temperature) scores pairs.

Shapes: B batch, T text length, N image tokens (patches + class), D tower width,
F MLP width, H heads, E head size, P projection width, C channels, p patch side.
Images enter channels-last and already normalised (clip_preprocess.py).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax.errors import UserError

ACTIVATIONS = ("quick_gelu", "gelu", "gelu_pytorch_tanh", "gelu_new")
# Before transformers PR #24773 CLIP configs said eos_token_id 2 and pooled at the largest id.
LEGACY_EOS_TOKEN_ID = 2
NORM_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Sizes of both towers; the defaults are OpenAI's ViT-B/32, the paper's retriever."""
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp: int = 3072
    vision_activation: str = "quick_gelu"
    vocab_size: int = 49408
    max_length: int = 77
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp: int = 2048
    text_activation: str = "quick_gelu"
    eos_token_id: int = 49407
    projection_dim: int = 512
    layer_norm_eps: float = 1e-5
    logit_scale_init: float = math.log(1 / 0.07)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def check(self) -> "ClipConfig":
        for name in ("image_size", "patch_size", "num_channels", "vision_width", "vision_layers", "vision_heads",
                     "vision_mlp", "vocab_size", "max_length", "text_width", "text_layers", "text_heads", "text_mlp",
                     "projection_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"ClipConfig.{name} must be a positive whole number, got {value!r}.")
        if self.image_size % self.patch_size:
            raise UserError(f"ClipConfig.image_size={self.image_size} is not a multiple of patch_size="
                            f"{self.patch_size}; the patches must tile the image.")
        for tower in ("vision", "text"):
            width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
            if width % heads:
                raise UserError(f"ClipConfig.{tower}_width={width} is not divisible by {tower}_heads={heads}.")
            act = getattr(self, f"{tower}_activation")
            if act not in ACTIVATIONS:
                raise UserError(f"ClipConfig.{tower}_activation={act!r} is not supported; choose one of "
                                f"{', '.join(ACTIVATIONS)}.")
        if not 0 <= self.eos_token_id < self.vocab_size:
            raise UserError(f"ClipConfig.eos_token_id={self.eos_token_id} lies outside the vocabulary "
                            f"0..{self.vocab_size - 1}.")
        return self


def activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_pytorch_tanh", "gelu_new"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    raise UserError(f"Activation {name!r} is not supported; choose one of {', '.join(ACTIVATIONS)}.")


def _normal(std: float):
    return nnx.initializers.normal(std)


def _linear(width_in: int, width_out: int, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(width_in, width_out, use_bias=bias, kernel_init=_normal(width_in ** -0.5), rngs=rngs)


def _layer_norm(width: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, epsilon=eps, use_fast_variance=False, rngs=rngs)


class EncoderLayer(nnx.Module):
    """x + attention(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int, mlp: int, act: str, eps: float, rngs: nnx.Rngs):
        self.heads, self.act = heads, act
        self.layer_norm1 = _layer_norm(width, eps, rngs)
        self.q_proj = _linear(width, width, rngs)
        self.k_proj = _linear(width, width, rngs)
        self.v_proj = _linear(width, width, rngs)
        self.out_proj = _linear(width, width, rngs)
        self.layer_norm2 = _layer_norm(width, eps, rngs)
        self.fc1 = _linear(width, mlp, rngs)
        self.fc2 = _linear(mlp, width, rngs)

    def __call__(self, x_BTD: jax.Array, causal: bool) -> jax.Array:
        B, T, D = x_BTD.shape
        h_BTD = self.layer_norm1(x_BTD)
        split = lambda y: y.reshape(B, T, self.heads, D // self.heads)  # noqa: E731
        attended_BTHE = jax.nn.dot_product_attention(split(self.q_proj(h_BTD)), split(self.k_proj(h_BTD)),
                                                     split(self.v_proj(h_BTD)), is_causal=causal)
        x_BTD = x_BTD + self.out_proj(attended_BTHE.reshape(B, T, D))
        return x_BTD + self.fc2(activation(self.act)(self.fc1(self.layer_norm2(x_BTD))))


class VisionTower(nnx.Module):
    def __init__(self, c: ClipConfig, rngs: nnx.Rngs):
        D, p = c.vision_width, c.patch_size
        self.patch_size = p
        self.patch_kernel = nnx.Param(_normal((p * p * c.num_channels) ** -0.5)(rngs.params(),
                                                                                (p, p, c.num_channels, D)))
        self.class_embedding = nnx.Param(_normal(D ** -0.5)(rngs.params(), (D,)))
        self.position_embedding = nnx.Param(_normal(0.02)(rngs.params(), (c.num_patches + 1, D)))
        self.pre_layernorm = _layer_norm(D, c.layer_norm_eps, rngs)
        self.layers = nnx.List([EncoderLayer(D, c.vision_heads, c.vision_mlp, c.vision_activation,
                                             c.layer_norm_eps, rngs) for _ in range(c.vision_layers)])
        self.post_layernorm = _layer_norm(D, c.layer_norm_eps, rngs)

    def __call__(self, pixels_BHWC: jax.Array) -> jax.Array:
        """Pooled class-token state [B, D] of normalised images [B, S, S, C]."""
        B, S, _, C = pixels_BHWC.shape
        p, g = self.patch_size, S // self.patch_size
        expected = round(math.sqrt(self.position_embedding.shape[0] - 1)) * p
        if S != expected or pixels_BHWC.shape[2] != expected:
            raise UserError(f"Images of {S}x{pixels_BHWC.shape[2]} given to a CLIP for {expected}x{expected}; "
                            f"preprocess them with cm3jax.retrieval.clip_preprocess first.")
        patches_BgpgpC = pixels_BHWC.reshape(B, g, p, g, p, C)
        x_BND = jnp.einsum("bipjqc,pqcd->bijd", patches_BgpgpC, self.patch_kernel[...]).reshape(B, g * g, -1)
        cls_B1D = jnp.broadcast_to(self.class_embedding[...], (B, 1, x_BND.shape[-1]))
        x_BND = jnp.concatenate([cls_B1D, x_BND], axis=1) + self.position_embedding[...]
        x_BND = self.pre_layernorm(x_BND)
        for layer in self.layers:
            x_BND = layer(x_BND, causal=False)
        return self.post_layernorm(x_BND[:, 0])


def eos_positions(ids_BT: jax.Array, eos_token_id: int) -> jax.Array:
    """Where each row's end-of-text token is, as transformers finds it: the first `eos_token_id`,
    or for legacy configs (eos_token_id 2) the largest id."""
    if eos_token_id == LEGACY_EOS_TOKEN_ID:
        return jnp.argmax(ids_BT, axis=-1)
    return jnp.argmax(ids_BT == eos_token_id, axis=-1)


class TextTower(nnx.Module):
    def __init__(self, c: ClipConfig, rngs: nnx.Rngs):
        D = c.text_width
        self.eos_token_id = c.eos_token_id
        self.token_embedding = nnx.Param(_normal(0.02)(rngs.params(), (c.vocab_size, D)))
        self.position_embedding = nnx.Param(_normal(0.01)(rngs.params(), (c.max_length, D)))
        self.layers = nnx.List([EncoderLayer(D, c.text_heads, c.text_mlp, c.text_activation, c.layer_norm_eps, rngs)
                                for _ in range(c.text_layers)])
        self.final_layer_norm = _layer_norm(D, c.layer_norm_eps, rngs)

    def __call__(self, ids_BT: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        """Pooled state [B, D] at each row's end-of-text token: at `lengths - 1` when lengths
        (tokens including the end token) are given, else found in the ids (eos_positions)."""
        B, T = ids_BT.shape
        if T > self.position_embedding.shape[0]:
            raise UserError(f"Texts of {T} tokens exceed this CLIP's {self.position_embedding.shape[0]} positions; "
                            f"truncate them.")
        x_BTD = jnp.take(self.token_embedding[...], ids_BT, axis=0) + self.position_embedding[:T]
        for layer in self.layers:
            x_BTD = layer(x_BTD, causal=True)
        x_BTD = self.final_layer_norm(x_BTD)
        ends_B = lengths_B - 1 if lengths_B is not None else eos_positions(ids_BT, self.eos_token_id)
        return x_BTD[jnp.arange(B), ends_B]


class CLIP(nnx.Module):
    def __init__(self, config: ClipConfig, rngs: nnx.Rngs):
        self.config = config.check()
        self.vision_model = VisionTower(config, rngs)
        self.text_model = TextTower(config, rngs)
        self.visual_projection = nnx.Linear(config.vision_width, config.projection_dim, use_bias=False,
                                            kernel_init=_normal(config.vision_width ** -0.5), rngs=rngs)
        self.text_projection = nnx.Linear(config.text_width, config.projection_dim, use_bias=False,
                                          kernel_init=_normal(config.text_width ** -0.5), rngs=rngs)
        self.logit_scale = nnx.Param(jnp.asarray(config.logit_scale_init, jnp.float32))

    def image_features(self, pixels_BHWC: jax.Array) -> jax.Array:
        """Unnormalised image embeddings [B, P] (HF `get_image_features`)."""
        return self.visual_projection(self.vision_model(pixels_BHWC))

    def text_features(self, ids_BT: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        """Unnormalised text embeddings [B, P] (HF `get_text_features`)."""
        return self.text_projection(self.text_model(ids_BT, lengths_B))

    def embed_images(self, pixels_BHWC: jax.Array) -> jax.Array:
        return l2_normalize(self.image_features(pixels_BHWC))

    def embed_texts(self, ids_BT: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        return l2_normalize(self.text_features(ids_BT, lengths_B))


def l2_normalize(x_BP, axis: int = -1):
    """x / |x| along `axis` (numpy or jax arrays alike); a zero vector stays zero."""
    xp = jnp if isinstance(x_BP, jax.Array) else np
    norm = xp.sqrt(xp.sum(x_BP * x_BP, axis=axis, keepdims=True))
    return x_BP / xp.maximum(norm, NORM_EPS)


def document_keys(text_BP=None, image_BP=None):
    """Keys of documents from their L2-normalised text and/or image embeddings: one modality's
    embedding as it is, a text+image document's the normalised mean of both (CM3Leon)."""
    if text_BP is None and image_BP is None:
        raise UserError("A document key needs a text embedding, an image embedding or both.")
    if text_BP is None or image_BP is None:
        return text_BP if image_BP is None else image_BP
    return l2_normalize((text_BP + image_BP) / 2)


def init_clip(config: ClipConfig, seed: int = 0) -> CLIP:
    """A randomly initialised CLIP, built in one compiled call (op by op, XLA:CPU compiles dozens)."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: CLIP(config, nnx.Rngs(0))))
    state = jax.jit(lambda: nnx.state(CLIP(config, nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg")))))()
    return nnx.merge(graphdef, state)
