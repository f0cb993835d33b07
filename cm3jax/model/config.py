"""The decoder's shape and switches: one model for the CM3Leon recipe and for imported Chameleon weights."""

from __future__ import annotations

import dataclasses
from typing import Any

from cm3jax.errors import UserError

NORMS = ("layernorm", "rmsnorm")  # layernorm: no learnable affine (CM3Leon); rmsnorm: learnable scale (Chameleon)
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")
IMAGE_CODE_SOURCES = ("codebook", "pixels", "factors")


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int
    n_kv_heads: int | None = None  # None: as many as query heads
    head_dim: int | None = None  # None: d_model // n_heads
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    positions: str = "learned"
    rope_theta: float = 10_000.0
    max_seq_len: int = 4096
    qk_norm: bool = False  # LayerNorm over each head's q and k (Chameleon)
    qk_norm_eps: float | None = None  # None: norm_eps (Hugging Face's Chameleon fixes it at 1e-5)
    swin_norm: bool = False  # normalise the block's output inside the residual (Chameleon 34B)
    tie_embeddings: bool = False
    init_std: float = 0.006  # truncated normal (+-3 std)
    position_init_std: float = 0.0002
    zero_init_outputs: bool = True  # attention and MLP output projections start at zero
    # image_positions > 0 adds a learned embedding of each image token's place in its image
    # (DALL-E's image position embeddings; CM3Leon has none), for the image token ids
    # [image_id_start, image_id_end), which training fills in from the vocabulary
    image_positions: int = 0
    # image_code_features = F > 0 also embeds and predicts each image token through a fixed
    # vector c of width F that training fills in from the image tokenizer: embedding += c W_in,
    # logit += h W_out c^T, so codes that look alike share what is learned about any of them.
    # image_code_source says which vector: "codebook", the code's codebook vector; "pixels", what
    # the code draws, each pixel's RGB and squared length (a logit then scores each pixel's colour);
    # "factors", the Shapes mask and colours of the patch the code encodes (one-hot; a logit then adds
    # a score of the mask to a score of each colour)
    image_code_features: int = 0
    image_code_source: str = "codebook"
    image_id_start: int = 0
    image_id_end: int = 0
    dtype: str = "float32"  # activations and matmuls; parameters stay float32
    remat: bool = False  # recompute each block's activations in the backward pass
    scan_layers: bool = False  # blocks stacked [L, ...] and run by one lax.scan: compiles one block, not L

    def __post_init__(self):
        for name, allowed in (("norm", NORMS), ("mlp", MLPS), ("positions", POSITIONS),
                              ("image_code_source", IMAGE_CODE_SOURCES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"model.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}.")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise UserError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; set head_dim.")
        if self.num_kv_heads <= 0 or self.n_heads % self.num_kv_heads:
            raise UserError(f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.num_kv_heads}.")
        if self.image_positions < 0 or (self.image_positions and not 0 <= self.image_id_start < self.image_id_end):
            raise UserError(f"model.image_positions ({self.image_positions}) must be 0 or the image tokens per image, "
                            f"with image ids [{self.image_id_start}, {self.image_id_end}) set from the vocabulary.")
        if self.image_code_features < 0 or (self.image_code_features
                                            and not 0 <= self.image_id_start < self.image_id_end):
            raise UserError(f"model.image_code_features ({self.image_code_features}) must be 0 or the width of the image "
                            f"tokenizer's code vectors, with image ids [{self.image_id_start}, "
                            f"{self.image_id_end}) set from the vocabulary.")
        if self.positions == "rope" and self.head_size % 2:
            raise UserError(f"RoPE needs an even head size, got {self.head_size}.")

    @property
    def head_size(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def head_norm_eps(self) -> float:
        return self.norm_eps if self.qk_norm_eps is None else self.qk_norm_eps

    @property
    def num_kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    def block_matmul_params(self) -> int:
        """Weights of one block's matmuls (attention projections and MLP)."""
        d, h, hd, kv = self.d_model, self.n_heads, self.head_size, self.num_kv_heads
        attention = d * hd * (h + 2 * kv) + h * hd * d
        return attention + d * self.mlp_hidden * (3 if self.mlp == "swiglu" else 2)

    def param_count(self) -> int:
        """Parameters, by formula (the tests check it against the built model)."""
        d = self.d_model
        qk_norm = 2 * (self.n_heads + self.num_kv_heads) * self.head_size if self.qk_norm else 0
        norms = 2 * d if self.norm == "rmsnorm" else 0
        block = self.block_matmul_params() + qk_norm + norms
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        positions = self.max_seq_len * d if self.positions == "learned" else 0
        positions += self.image_positions * d
        codes = self.image_codebook_size * self.image_code_features + 2 * self.image_code_features * d
        final_norm = d if self.norm == "rmsnorm" else 0
        return self.n_layers * block + embeddings + positions + codes + final_norm

    @property
    def image_codebook_size(self) -> int:
        return self.image_id_end - self.image_id_start

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field that has a default, with it."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "DecoderConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            import difflib
            hints = [f"{k} (did you mean {', '.join(difflib.get_close_matches(k, fields, 2, 0.5)) or 'nothing close'}?)"
                     for k in unknown]
            raise UserError(f"Unknown model config keys: {'; '.join(hints)}.")
        return cls(**values)
