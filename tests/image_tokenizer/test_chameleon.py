"""Chameleon's VQ-GAN imported into our Flax model gives the same codes and pixels as the
torch originals: Hugging Face's ChameleonVQVAE (encoder side, safetensors) and taming's VQModel
(full model, .ckpt). Every model here is small with random weights, saved in the real formats."""

import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
taming_model = pytest.importorskip("taming.modules.diffusionmodules.model")
taming_quantize = pytest.importorskip("taming.modules.vqvae.quantize")

from flax import nnx  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from cm3jax.errors import UserError  # noqa: E402
from cm3jax.image_tokenizer.chameleon import (  # noqa: E402
    ImportedVQGAN, config_from_hf, config_from_taming_yaml, convert_taming_ckpt, load_safetensors, torch_name)
from cm3jax.image_tokenizer.model import VQGANConfig  # noqa: E402
from cm3jax.shapes.render import render_many  # noqa: E402
from cm3jax.shapes.world import sample_split  # noqa: E402

HF_CONFIGS = {
    # Chameleon's channel multipliers and block count, with attention at two resolutions.
    "chameleon_like": dict(resolution=64, base_channels=32, channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2,
                           attn_resolutions=[16, 4], latent_channels=32, embed_dim=16, num_embeddings=256),
    # Chameleon's own setting of no attention outside the middle, on a finer code grid.
    "no_attention": dict(resolution=32, base_channels=32, channel_multiplier=[1, 2], num_res_blocks=1,
                         attn_resolutions=None, latent_channels=32, embed_dim=8, num_embeddings=128),
}

TAMING_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 16
    n_embed: 128
    ddconfig:
      double_z: false
      z_channels: 32
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2, 2]
      num_res_blocks: 1
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params: {disc_conditional: false, disc_in_channels: 3, disc_start: 0, disc_weight: 0.8, codebook_weight: 1.0}
"""


def images(resolution: int) -> np.ndarray:
    """float32[6, R, R, 3] in [-1, 1]: four Shapes scenes and two noise images."""
    shapes = render_many(sample_split("train", 4, resolution=resolution)).astype(np.float32) / 127.5 - 1
    noise = np.random.default_rng(0).uniform(-1, 1, (2, resolution, resolution, 3)).astype(np.float32)
    return np.concatenate([shapes, noise])


def nchw(x_BHWC: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(x_BHWC.transpose(0, 3, 1, 2)))


@torch.no_grad()
def randomise(module: "torch.nn.Module", seed: int) -> None:
    """Random weights everywhere, GroupNorm affine parameters included, at scales that keep
    activations near unit size."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.ndim == 4:
            p.copy_(noise / np.sqrt(p[0].numel()))
        elif name.endswith("weight"):  # GroupNorm scale
            p.copy_(1 + 0.3 * noise)
        else:
            p.copy_(0.2 * noise)


@torch.no_grad()
def spread_codebook(embedding: "torch.Tensor", z_BDhw: "torch.Tensor", seed: int) -> None:
    """A random codebook in the region the encoder's outputs occupy (noisy copies of random
    latents), so that images map to many different codes."""
    gen = torch.Generator().manual_seed(seed)
    z = z_BDhw.permute(0, 2, 3, 1).reshape(-1, z_BDhw.shape[1])
    picks = z[torch.randint(len(z), (embedding.shape[0],), generator=gen)]
    embedding.copy_(picks + 0.3 * z.std() * torch.randn(embedding.shape, generator=gen))


# Two codebook entries whose squared distances to a latent differ by less than this share of
# |z|^2 + |e|^2 are a tie: which one wins depends on the CPU's float kernels (AVX2 and AVX-512
# round torch's and XLA's sums differently), so either counts as right. Ties must stay rare: at
# most one, or 1% of the codes.
TIE_TOLERANCE = 1e-4
MAX_TIE_SHARE = 0.01


@nnx.jit
def _encode(model, x_BHWC):
    return model.encode(x_BHWC)[1]


@nnx.jit
def _latents(model, x_BHWC):
    return model.quant_conv(model.encoder(x_BHWC))


@nnx.jit
def _decode(model, codes_Bhw):
    return model.decode_codes(codes_Bhw)


def flax_codes(model, x_BHWC: np.ndarray) -> np.ndarray:
    return np.asarray(_encode(model, x_BHWC))


def assert_codes_match(model, x_BHWC: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Our codes of `x_BHWC` equal `want` (the reference's) wherever the nearest codebook entry
    of our pre-quantization latent is clear of the second by TIE_TOLERANCE; elsewhere both codes
    must be within the tolerance of the nearest. Returns our codes."""
    got = flax_codes(model, x_BHWC)
    z_ND = np.asarray(_latents(model, x_BHWC), np.float64).reshape(-1, model.config.embed_dim)
    e_KD = np.asarray(model.quantize.embedding[...], np.float64)
    d_NK = np.sum(z_ND ** 2, 1, keepdims=True) + np.sum(e_KD ** 2, 1) - 2 * z_ND @ e_KD.T
    nearest_N = np.min(d_NK, 1)
    tolerance_N = TIE_TOLERANCE * (np.sum(z_ND ** 2, 1) + np.sum(e_KD[np.argmin(d_NK, 1)] ** 2, 1))
    tied_N = np.sort(d_NK, 1)[:, 1] - nearest_N <= tolerance_N
    assert tied_N.sum() <= max(1, MAX_TIE_SHARE * len(tied_N)), f"{tied_N.sum()} of {len(tied_N)} codes are near-ties"
    rows = np.arange(len(z_ND))
    close_enough_N = np.maximum(d_NK[rows, got.reshape(-1)], d_NK[rows, want.reshape(-1)]) - nearest_N <= tolerance_N
    differ_N = got.reshape(-1) != want.reshape(-1)
    assert not np.any(differ_N & ~close_enough_N), (
        f"{int(np.sum(differ_N & ~close_enough_N))} codes differ without a near-tie, e.g. at "
        f"{np.flatnonzero(differ_N & ~close_enough_N)[:5]}")
    return got


# ------------------------------------------------------------------------ Hugging Face


def build_hf(kwargs: dict, seed: int = 0):
    model = transformers.ChameleonVQVAE(transformers.ChameleonVQVAEConfig(**kwargs)).eval()
    randomise(model, seed)
    x = nchw(images(kwargs["resolution"]))
    with torch.no_grad():
        spread_codebook(model.quantize.embedding.weight, model.quant_conv(model.encoder(x)), seed)
    return model


def hf_codes(model, x_BHWC: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        tokens = model.encode(nchw(x_BHWC)).image_tokens
    grid = x_BHWC.shape[1] // 2 ** (len(model.config.channel_multiplier) - 1)
    return tokens.reshape(len(x_BHWC), grid, grid).numpy()


@pytest.fixture(scope="module")
def small_hf(tmp_path_factory):
    """(torch model, saved directory) for the no-attention config."""
    model = build_hf(HF_CONFIGS["no_attention"], seed=1)
    out = tmp_path_factory.mktemp("hf_small")
    model.save_pretrained(out)
    return model, str(out)


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_hf_encoder_gives_identical_codes(name, tmp_path):
    kwargs = HF_CONFIGS[name]
    model = build_hf(kwargs)
    model.save_pretrained(tmp_path)
    config = config_from_hf(str(tmp_path))
    assert config.channel_multipliers == tuple(kwargs["channel_multiplier"])
    assert config.attn_resolutions == tuple(kwargs["attn_resolutions"] or ())

    ours = load_safetensors(str(tmp_path / "model.safetensors"), config, encoder_only=True)
    assert not ours.decoder_loaded
    x = images(kwargs["resolution"])
    want = hf_codes(model, x)
    assert len(np.unique(want)) > 10, "the test needs varied codes to mean anything"
    assert_codes_match(ours, x, want)


def test_hf_encoder_only_file_needs_consent(small_hf):
    _, directory = small_hf
    with pytest.raises(UserError, match="only the encoder side.*encoder_only=True"):
        load_safetensors(os.path.join(directory, "model.safetensors"), config_from_hf(directory))


def test_full_chameleon_checkpoint_prefix_and_shards(small_hf, tmp_path):
    """Inside a full Chameleon checkpoint the VQ-GAN's tensors are `model.vqmodel.*`, spread
    over shards named by an index, next to the language model's."""
    model, directory = small_hf
    tensors = {f"model.vqmodel.{k}": v.contiguous() for k, v in model.state_dict().items()}
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    extra = {"model-00001-of-00002.safetensors": "model.embed_tokens.weight",
             "model-00002-of-00002.safetensors": "lm_head.weight"}
    weight_map = {}
    for file, keys in shards.items():
        save_file({**{k: tensors[k] for k in keys}, extra[file]: torch.zeros(4, 8)}, tmp_path / file)
        weight_map.update({k: file for k in [*keys, extra[file]]})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = config_from_hf(transformers.ChameleonConfig(vq_config=model.config.to_dict()).to_dict())

    x = images(32)
    want = hf_codes(model, x)
    for path, prefix in [(str(tmp_path), None), (str(tmp_path / "model.safetensors.index.json"), "model.vqmodel")]:
        ours = load_safetensors(path, config, prefix=prefix, encoder_only=True)
        assert_codes_match(ours, x, want)


# ------------------------------------------------------------------------------ taming


class TamingVQModel(torch.nn.Module):
    """taming.models.vqgan.VQModel without its Lightning base class (taming.models.vqgan imports
    pytorch_lightning, which we do not install): the same taming submodules, under the same
    attribute names (hence the same state_dict names), composed exactly as VQModel.encode /
    VQModel.decode compose them."""

    def __init__(self, ddconfig: dict, n_embed: int, embed_dim: int):
        super().__init__()
        self.encoder = taming_model.Encoder(**ddconfig)
        self.decoder = taming_model.Decoder(**ddconfig)
        self.quantize = taming_quantize.VectorQuantizer2(n_embed, embed_dim, beta=0.25, remap=None,
                                                          sane_index_shape=False)
        self.quant_conv = torch.nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)

    def encode(self, x):
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, quant):
        return self.decoder(self.post_quant_conv(quant))


@pytest.fixture(scope="module")
def taming_files(tmp_path_factory):
    """(torch model, directory holding vqgan.ckpt and vqgan.yaml)."""
    params = yaml.safe_load(TAMING_YAML)["model"]["params"]
    model = TamingVQModel(params["ddconfig"], params["n_embed"], params["embed_dim"]).eval()
    randomise(model, seed=2)
    with torch.no_grad():
        spread_codebook(model.quantize.embedding.weight, model.quant_conv(model.encoder(nchw(images(32)))), 2)
    state_dict = dict(model.state_dict())
    state_dict["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)  # trained beside the model
    state_dict["loss.logvar"] = torch.zeros(())
    out = tmp_path_factory.mktemp("taming")
    torch.save({"state_dict": state_dict, "epoch": 7, "global_step": 1234}, out / "vqgan.ckpt")
    (out / "vqgan.yaml").write_text(TAMING_YAML)
    return model, out


def test_taming_checkpoint_converts_and_matches_codes_and_pixels(taming_files, tmp_path):
    model, directory = taming_files
    conversion = convert_taming_ckpt(str(directory / "vqgan.ckpt"), str(tmp_path / "vqgan.safetensors"))
    assert conversion.dropped == ("loss.discriminator.main.0.weight", "loss.logvar")
    assert set(load_file(tmp_path / "vqgan.safetensors")) == set(model.state_dict())

    config = config_from_taming_yaml(str(directory / "vqgan.yaml"))
    ours = load_safetensors(str(tmp_path / "vqgan.safetensors"), config)
    assert ours.decoder_loaded

    x = images(32)
    with torch.no_grad():
        _, _, (_, _, indices) = model.encode(nchw(x))
    grid = config.grid_size()
    want = indices.reshape(len(x), grid, grid).numpy()
    assert len(np.unique(want)) > 10
    assert_codes_match(ours, x, want)

    with torch.no_grad():
        z_q = model.quantize.get_codebook_entry(torch.from_numpy(want).reshape(-1),
                                                shape=(len(x), grid, grid, config.embed_dim))
        pixels = model.decode(z_q).permute(0, 2, 3, 1).numpy()
    ours_pixels = np.asarray(_decode(ours, want))  # the same codes, whichever way a near-tie went
    assert pixels.std() > 0.1, "decoder output should not be degenerate"
    assert np.abs(ours_pixels - pixels).max() < 1e-4


def test_name_mapping_covers_taming_vqmodel_exactly(taming_files):
    model, directory = taming_files
    config = config_from_taming_yaml(str(directory / "vqgan.yaml"))
    ours = nnx.eval_shape(lambda: ImportedVQGAN(config, nnx.Rngs(0)))
    names = {torch_name(path)[0] for path, _ in nnx.to_flat_state(nnx.state(ours, nnx.Param))}
    assert names == set(model.state_dict())


# ------------------------------------------------------------------------------ errors


def write_variant(small_hf, tmp_path, change) -> str:
    model, _ = small_hf
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    change(tensors)
    path = tmp_path / "variant.safetensors"
    save_file(tensors, path)
    return str(path)


def hf_config(small_hf) -> VQGANConfig:
    return config_from_hf(small_hf[1])


def test_missing_tensor_is_named(small_hf, tmp_path):
    path = write_variant(small_hf, tmp_path, lambda t: t.pop("encoder.down.0.block.0.norm1.bias"))
    with pytest.raises(UserError, match=r"missing encoder\.down\.0\.block\.0\.norm1\.bias"):
        load_safetensors(path, hf_config(small_hf), encoder_only=True)


def test_wrong_shape_is_named_with_both_shapes(small_hf, tmp_path):
    def grow_codebook(t):
        t["quantize.embedding.weight"] = torch.zeros(129, 8)

    path = write_variant(small_hf, tmp_path, grow_codebook)
    with pytest.raises(UserError, match=r"quantize\.embedding\.weight has shape \[129, 8\], expected \[128, 8\]"):
        load_safetensors(path, hf_config(small_hf), encoder_only=True)


def test_unexpected_tensor_is_named(small_hf, tmp_path):
    path = write_variant(small_hf, tmp_path, lambda t: t.update({"encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(UserError, match=r"unexpected encoder\.extra\.weight"):
        load_safetensors(path, hf_config(small_hf), encoder_only=True)


def test_config_that_does_not_match_the_file(small_hf):
    config = dataclasses.replace(hf_config(small_hf), channel_multipliers=(1, 2, 2))
    with pytest.raises(UserError, match="does not match the VQ-GAN config.*config_from_hf"):
        load_safetensors(os.path.join(small_hf[1], "model.safetensors"), config, encoder_only=True)


def test_wrong_prefix_says_what_the_file_holds(small_hf):
    with pytest.raises(UserError, match="none of the VQ-GAN's tensors under prefix 'model.vqmodel.'"):
        load_safetensors(os.path.join(small_hf[1], "model.safetensors"), hf_config(small_hf),
                         prefix="model.vqmodel.", encoder_only=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors_file_is_named(small_hf, tmp_path, damage):
    data = open(os.path.join(small_hf[1], "model.safetensors"), "rb").read()
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x07not a safetensors file" * 50 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(UserError, match="broken.safetensors is not a readable safetensors file"):
        load_safetensors(str(path), hf_config(small_hf), encoder_only=True)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(UserError, match="nowhere.safetensors does not exist"):
        load_safetensors(str(tmp_path / "nowhere.safetensors"), VQGANConfig())
    with pytest.raises(UserError, match="nowhere.ckpt does not exist"):
        convert_taming_ckpt(str(tmp_path / "nowhere.ckpt"), str(tmp_path / "out.safetensors"))
    with pytest.raises(UserError, match="nowhere.yaml does not exist"):
        config_from_taming_yaml(str(tmp_path / "nowhere.yaml"))
    with pytest.raises(UserError, match="config.json does not exist"):
        config_from_hf(str(tmp_path))


def test_ckpt_holding_python_objects_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"quant_conv.bias": torch.zeros(2)},
                "hyper_parameters": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(UserError, match=r"holds more than tensors \(a argparse.Namespace object\)"):
        convert_taming_ckpt(str(path), str(tmp_path / "out.safetensors"))
    assert not (tmp_path / "out.safetensors").exists()


def test_ckpt_with_non_tensor_state_is_refused(tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"quant_conv.bias": torch.zeros(2), "note": "hello"}}, path)
    with pytest.raises(UserError, match="state_dict entries note are not tensors"):
        convert_taming_ckpt(str(path), str(tmp_path / "out.safetensors"))


def test_corrupt_ckpt_is_named(taming_files, tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes((taming_files[1] / "vqgan.ckpt").read_bytes()[:5000])
    with pytest.raises(UserError, match="broken.ckpt is not a readable torch checkpoint"):
        convert_taming_ckpt(str(path), str(tmp_path / "out.safetensors"))
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(UserError, match="broken.ckpt is not a readable torch checkpoint"):
        convert_taming_ckpt(str(path), str(tmp_path / "out.safetensors"))


def test_conversion_without_torch_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match=r"pip install torch==2\.13\.0"):
        convert_taming_ckpt(str(tmp_path / "vqgan.ckpt"), str(tmp_path / "out.safetensors"))


def test_unsupported_configs_are_refused(tmp_path):
    (tmp_path / "vqgan.yaml").write_text(TAMING_YAML.replace("double_z: false", "double_z: true"))
    with pytest.raises(UserError, match="double_z must be false"):
        config_from_taming_yaml(str(tmp_path / "vqgan.yaml"))
    (tmp_path / "vqgan.yaml").write_text(TAMING_YAML.replace("      ch: 32\n", ""))
    with pytest.raises(UserError, match="has no 'ch'"):
        config_from_taming_yaml(str(tmp_path / "vqgan.yaml"))
    with pytest.raises(UserError, match="double_latent"):
        config_from_hf({"double_latent": True})
    with pytest.raises(UserError, match="norm_groups"):
        load_safetensors(str(tmp_path / "any.safetensors"), VQGANConfig(norm_groups=16))


def test_configs_match_chameleon():
    assert config_from_hf({}) == VQGANConfig.chameleon()
