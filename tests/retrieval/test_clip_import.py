import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.retrieval.clip_import import load_hf_clip

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, LENGTH = 99, 16


def _save_random_clip(directory, eos_token_id: int, text_act="quick_gelu", vision_act="gelu", seed=0) -> None:
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=LENGTH, eos_token_id=eos_token_id,
                         bos_token_id=0, pad_token_id=1, hidden_act=text_act),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=vision_act),
        projection_dim=24, logit_scale_init_value=2.0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # move every tensor off its init (unit norms, zero biases) so each one matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(str(directory))
    return model


def _features(model):
    """Jitted (image_features, text_features(ids, lengths=None)) of an NNX CLIP."""
    graphdef, state = nnx.split(model)
    image = jax.jit(lambda s, x: nnx.merge(graphdef, s).image_features(x))
    text = jax.jit(lambda s, ids, lengths: nnx.merge(graphdef, s).text_features(ids, lengths))
    return (lambda pixels_BCHW: np.asarray(image(state, jnp.asarray(pixels_BCHW.transpose(0, 2, 3, 1)))),
            lambda ids, lengths=None: np.asarray(text(state, jnp.asarray(ids), lengths)))


def _token_ids(rng, eos_token_id: int, rows: int = 4) -> np.ndarray:
    ids = rng.integers(3, VOCAB - 1, size=(rows, LENGTH))
    ends = [LENGTH - 1, 0, 5, 9][:rows]
    for row, end in enumerate(ends):
        ids[row, end] = eos_token_id if eos_token_id != 2 else VOCAB - 1  # legacy pooling: at the largest id
        ids[row, end + 1:] = 1
    return ids, np.array(ends) + 1


@pytest.mark.parametrize("eos_token_id", [VOCAB - 1, 2])
def test_imported_clip_matches_transformers(tmp_path, eos_token_id):
    hf = _save_random_clip(tmp_path, eos_token_id)
    model = load_hf_clip(str(tmp_path))
    rng = np.random.default_rng(1)
    pixels_BCHW = rng.normal(size=(3, 3, 32, 32)).astype(np.float32)
    ids, lengths = _token_ids(rng, eos_token_id)
    with torch.no_grad():
        image_ref = hf.get_image_features(pixel_values=torch.tensor(pixels_BCHW)).pooler_output.numpy()
        text_ref = hf.get_text_features(input_ids=torch.tensor(ids)).pooler_output.numpy()
    image_features, text_features = _features(model)
    image, text, text_from_lengths = image_features(pixels_BCHW), text_features(ids), text_features(ids, lengths)
    assert np.abs(image_ref).max() > 0.1 and np.abs(text_ref).max() > 0.1
    np.testing.assert_allclose(image, image_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(text, text_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(text_from_lengths, text_ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(float(model.logit_scale[...]), hf.logit_scale.item(), atol=1e-6)


def test_both_activations_and_their_swap_are_imported(tmp_path):
    """quick_gelu and gelu differ, so a model that mixed them up would fail the parity."""
    hf = _save_random_clip(tmp_path, VOCAB - 1, text_act="gelu", vision_act="quick_gelu", seed=3)
    model = load_hf_clip(str(tmp_path))
    assert (model.config.text_activation, model.config.vision_activation) == ("gelu", "quick_gelu")
    pixels = np.random.default_rng(2).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = hf.get_image_features(pixel_values=torch.tensor(pixels)).pooler_output.numpy()
    np.testing.assert_allclose(_features(model)[0](pixels), ref, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf_clip")
    _save_random_clip(directory, VOCAB - 1)
    return directory


def _copy(saved, tmp_path, skip=()):
    for name in os.listdir(saved):
        if name not in skip:
            (tmp_path / name).write_bytes((saved / name).read_bytes())
    return tmp_path


def test_missing_directory_or_files_are_user_errors(saved, tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_hf_clip(str(tmp_path / "absent"))
    os.makedirs(tmp_path / "a")
    with pytest.raises(UserError, match="No config.json"):
        load_hf_clip(str(_copy(saved, tmp_path / "a", skip=("config.json",))))
    os.makedirs(tmp_path / "b")
    with pytest.raises(UserError, match="No weights file .*model.safetensors"):
        load_hf_clip(str(_copy(saved, tmp_path / "b", skip=("model.safetensors",))))


def test_corrupt_files_are_user_errors(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    (directory / "model.safetensors").write_bytes(b"\x00garbage, not safetensors")
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_hf_clip(str(directory))
    (directory / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_hf_clip(str(directory))


def test_weights_that_do_not_fit_the_config_are_user_errors(saved, tmp_path):
    directory = _copy(saved, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 3
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="missing .* tensors .*text_model.encoder.layers.2"):
        load_hf_clip(str(directory))
    config["text_config"]["num_hidden_layers"] = 2
    config["projection_dim"] = 20
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="has shape"):
        load_hf_clip(str(directory))
    config["model_type"] = "siglip"
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="not a CLIP"):
        load_hf_clip(str(directory))
