"""Decoder weights from Hugging Face Chameleon files: transformers' logits, for several shapes."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.checkpoints import Json
from cm3jax.chameleon.hf_config import decoder_fields
from cm3jax.chameleon.tensors import plan
from cm3jax.chameleon.weights import hf_tensors, read_decoder, write_sharded
from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from tests.chameleon.hf_reference import reference_logits, save_reference

SWITCHES = {
    "plain": {},
    "swin_norm": dict(swin_norm=True),
    "grouped_query": dict(num_key_value_heads=2),
    "odd_heads_one_kv": dict(hidden_size=24, num_attention_heads=3, num_key_value_heads=1),
    "tied_and_theta": dict(tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                           rms_norm_eps=1e-6),
}


def _decoder(path):
    with open(os.path.join(path, "config.json")) as f:
        config = DecoderConfig(**decoder_fields(json.load(f)))
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Decoder(config, nnx.Rngs(0))), nnx.Param)
    return nnx.merge(graphdef, read_decoder(path, config)), config


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_logits_match_transformers(name, tmp_path):
    """Every position's logits (image tokens included: the reference's come from its final hidden
    states, before HF suppresses image logits) within 1e-4 of ChameleonForConditionalGeneration."""
    path, reference = save_reference(str(tmp_path), seed=len(name), **SWITCHES[name])
    model, config = _decoder(path)
    ids = np.random.default_rng(1).integers(0, config.vocab_size, (2, 24))
    ours = np.asarray(model(jnp.asarray(ids)))
    theirs = reference_logits(reference, ids)
    assert np.abs(theirs).max() > 1.0  # random weights that give logits worth comparing
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_sharded_checkpoints_with_an_index_read_the_same(tmp_path):
    path, _ = save_reference(str(tmp_path / "one"))
    sharded, _ = save_reference(str(tmp_path / "many"), max_shard_size="20KB")
    assert os.path.isfile(os.path.join(sharded, "model.safetensors.index.json"))
    (a, _), (b, _) = _decoder(path), _decoder(sharded)
    for (p, x), (_, y) in zip(nnx.to_flat_state(nnx.state(a)), nnx.to_flat_state(nnx.state(b))):
        np.testing.assert_array_equal(np.asarray(x.get_value()), np.asarray(y.get_value()), err_msg=str(p))


def test_the_tensor_plan_round_trips_every_layout():
    config = DecoderConfig(**decoder_fields(dict(vocab_size=40, hidden_size=12, intermediate_size=20,
                                                 num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1)))
    rng = np.random.default_rng(0)
    for tensor in plan(config):
        hf = rng.standard_normal(tensor.hf_shape).astype(np.float32)
        ours = tensor.to_ours(hf)
        assert ours.shape == tensor.ours_shape
        np.testing.assert_array_equal(tensor.to_hf(ours), hf)
    q = next(t for t in plan(config) if t.hf_name.endswith("q_proj.weight"))
    hf = rng.standard_normal(q.hf_shape).astype(np.float32)
    # head h's output row h*E + e is our wq[:, h, e]
    np.testing.assert_array_equal(q.to_ours(hf)[:, 2, 1], hf[2 * 4 + 1])


def test_written_shards_hold_every_tensor_once(tmp_path):
    arrays = [(f"t{i}", np.full((64,), i, np.float32)) for i in range(5)]
    files = write_sharded(iter(arrays), str(tmp_path), max_shard_bytes=600)
    assert "model.safetensors.index.json" in files and len(files) == 4
    from cm3jax import safetensors_io
    back = safetensors_io.read_all(str(tmp_path))
    assert sorted(back) == [name for name, _ in arrays]
    np.testing.assert_array_equal(back["t3"], arrays[3][1])


def test_hf_tensors_inverts_read_decoder(hf_checkpoint):
    from cm3jax import safetensors_io
    path, _ = hf_checkpoint
    model, config = _decoder(path)
    source = safetensors_io.read_all(path)
    written = dict(hf_tensors(nnx.state(model, nnx.Param), config))
    assert written.keys() == {k for k in source if not k.startswith("model.vqmodel.")}
    for name, array in written.items():
        np.testing.assert_array_equal(array, source[name], err_msg=name)


@pytest.mark.parametrize("damage, message", [
    ("drop_shard", "does not exist"),
    ("wrong_shape", "model.layers.1.mlp.up_proj.weight has shape"),
    ("missing_tensor", "missing model.layers.0.self_attn.k_norm.bias"),
    ("config_mismatch", "model.embed_tokens.weight has shape"),
])
def test_wrong_or_partial_checkpoints_are_refused_naming_the_tensor(damage, message, tmp_path):
    from safetensors.numpy import load_file, save_file
    path, _ = save_reference(str(tmp_path), max_shard_size="20KB" if damage == "drop_shard" else None)
    with open(os.path.join(path, "config.json")) as f:
        hf = json.load(f)
    if damage == "drop_shard":
        os.remove(os.path.join(path, sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))[1]))
    elif damage in ("wrong_shape", "missing_tensor"):
        file = os.path.join(path, "model.safetensors")
        tensors = load_file(file)
        if damage == "wrong_shape":
            tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:-1]
        else:
            del tensors["model.layers.0.self_attn.k_norm.bias"]
        save_file(tensors, file)
    else:
        hf["hidden_size"] = 16
    with pytest.raises(UserError, match=message):
        read_decoder(path, DecoderConfig(**decoder_fields(hf)))


def test_sharded_placement_writes_the_same_checkpoint_as_one_device(hf_checkpoint, tmp_path):
    """Import onto a (1, 4, 2) mesh of the suite's 8 CPU devices: each array is spread as training
    would spread it, and the written checkpoint restores to the same values."""
    import jax
    from cm3jax.checkpoints import Checkpoints
    from cm3jax.chameleon.weights import write_decoder
    from cm3jax.sharding import make_mesh
    if jax.device_count() < 8:
        pytest.skip("needs the suite's 8 CPU devices")
    path, _ = hf_checkpoint
    model, config = _decoder(path)
    mesh = make_mesh((1, 4, 2))
    sharded = read_decoder(path, config, mesh)
    wq = dict(nnx.to_flat_state(sharded))[("blocks", 0, "attention", "wq")].get_value()
    assert len(wq.sharding.device_set) == 8 and wq.addressable_shards[0].data.shape == (8, 2, 8)  # [D/4, H/2, E]
    embed = dict(nnx.to_flat_state(sharded))[("embed",)].get_value()  # 279 entries: the vocabulary axis stays whole
    assert embed.addressable_shards[0].data.shape == (config.vocab_size, 32 // 4)
    with Checkpoints(str(tmp_path), async_save=False) as checkpoints:
        checkpoints.save(0, {"vocab": Json({})})
        write_decoder(path, config, os.path.join(checkpoints.where(0), "params"), mesh)
    with Checkpoints(str(tmp_path), read_only=True) as checkpoints:
        back = checkpoints.restore_module(0, lambda: Decoder(config, nnx.Rngs(0)), as_state=True)
    for (p, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model)), nnx.to_flat_state(nnx.state(back))):
        np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), err_msg=str(p))
