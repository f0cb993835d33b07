"""Tiny Hugging Face Chameleon checkpoints with random weights, in the real file layout
(config.json with its vocabulary_map, safetensors, tokenizer.json), and the reference model."""

from __future__ import annotations

import os

import numpy as np

IMAGE_CODES = 16  # the tiny VQ-VAE's codebook
SHAPES_CORPUS = ["a large red circle in the top left", "two small blue squares", "a green triangle at the bottom",
                 "what colour is the circle?", "the flag of vexzorland"] * 8


def image_token_name(code: int) -> str:
    return "IMGIMG" + "".join(chr(ord("A") + int(c)) for c in str(code)) + "Z"


def specials() -> list[str]:
    """Chameleon's order: <s> <pad> </s> <reserved>, the image codes, then its other specials."""
    names = sorted(image_token_name(c) for c in range(IMAGE_CODES))  # by name, as the real vocabulary is
    return ["<s>", "<pad>", "</s>", "<reserved08706>", *names, "<racm3:break>", "<eoss>", "<image>"]


def build_tokenizer(vocab_size: int = 160):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE(byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials(), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(SHAPES_CORPUS, trainer)
    return tokenizer


def hf_config(tokenizer, **switches):
    from transformers import ChameleonConfig
    vocab = tokenizer.get_vocab()
    fields = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                  rope_parameters={"rope_type": "default", "rope_theta": 10_000.0}, vocabulary_map=vocab,
                  bos_token_id=vocab["<s>"], pad_token_id=vocab["<pad>"], eos_token_id=vocab["</s>"],
                  vq_config=dict(embed_dim=8, num_embeddings=IMAGE_CODES, latent_channels=32, resolution=16,
                                 base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[]))
    fields.update(switches)
    return ChameleonConfig(**fields)


def build_reference(config, seed: int = 0):
    """A ChameleonForConditionalGeneration with every weight random (norm scales and QK-norm biases
    too, so that a mixed-up layout cannot pass)."""
    import torch
    from transformers import ChameleonForConditionalGeneration
    torch.manual_seed(seed)
    model = ChameleonForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("model.vqmodel."):
                continue
            scale = 0.2 if p.ndim > 1 else 0.5
            p.copy_((1.0 if "norm.weight" in name else 0.0) + scale * torch.randn_like(p))
    return model


def save_reference(tmp_dir: str, seed: int = 0, max_shard_size: str | None = None, **switches):
    """A saved checkpoint directory (weights, config, tokenizer) and the reference model."""
    tokenizer = build_tokenizer()
    model = build_reference(hf_config(tokenizer, **switches), seed)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(tmp_dir, safe_serialization=True, **kwargs)
    tokenizer.save(os.path.join(tmp_dir, "tokenizer.json"))
    return tmp_dir, model


def reference_logits(model, ids: np.ndarray) -> np.ndarray:
    """float32 [B, T, V] logits without HF's image-token suppression (from its final hidden states)."""
    import torch
    with torch.no_grad():
        hidden = model.model(input_ids=torch.as_tensor(ids, dtype=torch.long)).last_hidden_state
        return model.lm_head(hidden).numpy()


TAMING_YAML = """\
model:
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 8
    n_embed: 16
    ddconfig: {double_z: false, z_channels: 32, resolution: 16, in_channels: 3, out_ch: 3, ch: 32, ch_mult: [1, 2],
               num_res_blocks: 1, attn_resolutions: [], dropout: 0.0}
"""


def save_taming_vqgan(directory: str, seed: int = 0) -> str:
    """Chameleon's tokenizer folder (vqgan.yaml, vqgan.ckpt: a torch pickle of taming's state_dict),
    for the tiny checkpoint's 16 codes, with random weights."""
    import torch
    from flax import nnx

    from cm3jax.image_tokenizer.chameleon import config_from_taming_yaml, taming_tensors
    from cm3jax.image_tokenizer.model import VQGAN
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vqgan.yaml"), "w") as f:
        f.write(TAMING_YAML)
    model = VQGAN(config_from_taming_yaml(os.path.join(directory, "vqgan.yaml")), nnx.Rngs(seed))
    state = {k: torch.from_numpy(v.copy()) for k, v in taming_tensors(model).items()}
    torch.save({"state_dict": state}, os.path.join(directory, "vqgan.ckpt"))
    return directory
