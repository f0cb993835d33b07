"""`cm3jax import chameleon` / `export chameleon`: a run directory that the sampling commands
load, greedy text equal to transformers', export that transformers loads, nothing left on failure."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.checkpoints import Checkpoints, Json
from cm3jax.chameleon.convert import export_chameleon, import_chameleon
from cm3jax.chameleon.hf_config import decoder_fields
from cm3jax.chameleon.weights import read_decoder
from cm3jax.cli import main
from cm3jax.config import decoder_experiment
from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sampling.sampler import generate
from cm3jax.sampling.strategies import SamplingSettings
from cm3jax.vocab import MultimodalVocab
from tests.chameleon.conftest import files_in
from tests.chameleon.hf_reference import reference_logits


def _flat(state):
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def test_an_import_loads_like_any_run_and_keeps_the_logits(hf_checkpoint, imported, trained):
    _, reference = hf_checkpoint
    assert type(trained.vocab).__name__ == "ChameleonVocab"
    assert trained.model.config.qk_norm and trained.model.config.num_kv_heads == 2
    ids = np.random.default_rng(3).integers(0, trained.model.config.vocab_size, (1, 16))
    np.testing.assert_allclose(np.asarray(trained.model(jnp.asarray(ids))), reference_logits(reference, ids),
                               atol=1e-4, rtol=0)
    record = json.load(open(os.path.join(imported, "import.json")))
    assert record["image_decoder"] is False and record["tensors"] == 29


def test_greedy_text_equals_transformers_generate(hf_checkpoint, trained):
    import torch
    _, reference = hf_checkpoint
    prompt = trained.codec.encode_text("a large red circle")
    prompt = np.concatenate([[trained.vocab.bos_id], prompt]).astype(np.int32)
    with torch.no_grad():
        theirs = reference.generate(torch.as_tensor(prompt[None], dtype=torch.long), max_new_tokens=32,
                                    min_new_tokens=32, do_sample=False).numpy()[0, len(prompt):]
    # ours samples text under the modality masks: no <pad>, and <racm3:break> would open an image
    assert not np.isin(theirs, [trained.vocab.pad_id, trained.vocab.break_id]).any(), "pick another prompt"
    settings = SamplingSettings(strategy="greedy", temperature=0.0)
    ours = generate(trained.model, trained.vocab, [(prompt,)], settings, max_new=32)
    assert ours.lengths[0] == 32 or theirs[ours.lengths[0] - 1] == trained.vocab.eos_id
    np.testing.assert_array_equal(ours.sample(0), theirs[:ours.lengths[0]])


def test_export_then_import_gives_back_every_array_and_transformers_agrees(hf_checkpoint, imported, tmp_path):
    from transformers import ChameleonForConditionalGeneration
    hf_dir = str(tmp_path / "hf")
    result = export_chameleon(imported, hf_dir)
    assert "tokenizer.json" in result["files"]
    again = str(tmp_path / "again")
    import_chameleon(hf_dir, again, progress=False)
    with Checkpoints(imported, read_only=True) as a, Checkpoints(again, read_only=True) as b:
        va, vb = (c.restore(0, {"vocab": Json()})["vocab"] for c in (a, b))
    assert va == vb
    from cm3jax.sampling.inference import TrainedDecoder
    first, second = TrainedDecoder.load(imported), TrainedDecoder.load(again)
    x, y = _flat(nnx.state(first.model)), _flat(nnx.state(second.model))
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    loaded = ChameleonForConditionalGeneration.from_pretrained(hf_dir).eval()
    ids = np.random.default_rng(5).integers(0, first.model.config.vocab_size, (1, 12))
    np.testing.assert_allclose(reference_logits(loaded, ids), reference_logits(hf_checkpoint[1], ids), atol=0, rtol=0)


def _cm3jax_run(tmp_path, **model):
    """A decoder checkpoint as `cm3jax train` writes one (random weights), with its own vocabulary."""
    vocab = MultimodalVocab(text_size=300, image_codebook_size=64, image_tokens=16)
    fields = dict(vocab_size=vocab.padded_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=64,
                  norm="rmsnorm", mlp="swiglu", positions="rope", qk_norm=True, qk_norm_eps=1e-5,
                  zero_init_outputs=False, init_std=0.2, **model)
    config = decoder_experiment(fields)
    decoder = Decoder(DecoderConfig(**fields), nnx.Rngs(7))
    workdir = str(tmp_path / "run")
    with Checkpoints(workdir, async_save=False) as checkpoints:
        checkpoints.save(10, {"params": nnx.state(decoder, nnx.Param), "config": Json(config.to_dict()),
                              "vocab": Json(vocab.to_json())})
    return workdir, decoder


@pytest.mark.parametrize("scan_layers", [False, True])
def test_a_model_trained_with_the_chameleon_switches_serves_in_transformers(tmp_path, scan_layers):
    from transformers import ChameleonForConditionalGeneration
    workdir, decoder = _cm3jax_run(tmp_path, scan_layers=scan_layers)
    out = str(tmp_path / "hf")
    export_chameleon(workdir, out)
    loaded = ChameleonForConditionalGeneration.from_pretrained(out).eval()
    ids = np.random.default_rng(0).integers(0, decoder.config.vocab_size, (2, 10))
    np.testing.assert_allclose(reference_logits(loaded, ids), np.asarray(decoder(jnp.asarray(ids))), atol=1e-4, rtol=0)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["vocabulary_map"]["IMGIMGBCZ"] == 22 + 300 + 12  # code 12 after the specials and text pieces
    back = read_decoder(out, DecoderConfig(**decoder_fields(config)))
    if not scan_layers:
        assert all(np.array_equal(a, b) for a, b in zip(_flat(back).values(), _flat(nnx.state(decoder, nnx.Param)).values()))


def test_a_decoder_chameleon_cannot_express_is_refused_by_name(tmp_path):
    workdir, _ = _cm3jax_run(tmp_path, image_positions=16, image_id_start=322, image_id_end=386)
    with pytest.raises(UserError, match="model.image_positions is 16"):
        export_chameleon(workdir, str(tmp_path / "hf"))
    assert not os.path.exists(tmp_path / "hf")


def test_a_failed_import_writes_nothing_and_an_existing_out_is_refused(hf_checkpoint, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(hf_checkpoint[0], broken)
    os.remove(os.path.join(broken, "tokenizer.json"))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="No tokenizer.json"):
        import_chameleon(broken, str(out), progress=False)
    assert files_in(tmp_path) == ["broken"]
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        import_chameleon(hf_checkpoint[0], str(out), progress=False)
    assert files_in(out) == ["keep.txt"]


def test_a_config_whose_tensors_disagree_is_refused_before_anything_is_written(hf_checkpoint, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(hf_checkpoint[0], broken)
    config = json.load(open(os.path.join(broken, "config.json")))
    config["intermediate_size"] = 40
    json.dump(config, open(os.path.join(broken, "config.json"), "w"))
    with pytest.raises(UserError, match=r"model.layers.0.mlp.gate_proj.weight has shape \[48, 32\]"):
        import_chameleon(broken, str(tmp_path / "out"), progress=False)
    assert not os.path.exists(tmp_path / "out")


def test_the_commands_import_and_export(hf_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["import", "chameleon", "--from", hf_checkpoint[0], "--out", out]) == 0
    assert "cannot draw them" in capsys.readouterr().out
    assert main(["export", "chameleon", "--checkpoint", out, "--out", str(tmp_path / "hf")]) == 0
    assert os.path.isfile(tmp_path / "hf" / "config.json")
    with pytest.raises(SystemExit) as exit:
        main(["import", "chameleon", "--from", str(tmp_path / "nowhere"), "--out", out])
    assert exit.value.code == 2 and "no Chameleon checkpoint directory" in capsys.readouterr().err


def test_with_its_vqgan_an_import_draws_images_sampled_under_the_modality_masks(hf_checkpoint, tmp_path):
    """HF's forward floors every image-token logit; an import samples image spans like any model."""
    from cm3jax.image_tokenizer.codec import decode_codes
    from cm3jax.sampling.inference import TrainedDecoder
    from tests.chameleon.hf_reference import save_taming_vqgan
    out = str(tmp_path / "run")
    record = import_chameleon(hf_checkpoint[0], out, vqgan=save_taming_vqgan(str(tmp_path / "tokenizer")),
                              progress=False)
    assert record["image_decoder"]
    trained = TrainedDecoder.load(out)
    images, generation, _ = trained.text_to_image("a large red circle", SamplingSettings(strategy="greedy",
                                                                                        temperature=0.0))
    ids = generation.sample(0)
    vocab = trained.vocab
    assert len(ids) == vocab.image_tokens and vocab.is_image(ids).all()
    grid = vocab.codes(ids).reshape(trained.codec.grid)
    np.testing.assert_array_equal(images[0], decode_codes(trained.image_model, grid[None])[0])
    assert images.shape == (1, 16, 16, 3) and images.std() > 0
    # the other sampling commands run on it too: captions and answers are text after a wrapped image
    greedy = SamplingSettings(strategy="greedy", temperature=0.0)
    assert isinstance(trained.caption(images[0], greedy, max_new=8), str)
    assert isinstance(trained.answer(images[0], "what colour is the circle?", greedy, max_new=8), str)
    edited, _ = trained.edit(images[0], "make it blue", SamplingSettings(strategy="greedy", temperature=0.0,
                                                                       image_scale=1.5, text_scale=3.0))
    assert edited.shape == (1, 16, 16, 3)


def test_without_its_vqgan_an_import_refuses_to_draw(trained):
    with pytest.raises(UserError, match="--vqgan"):
        trained.text_to_image("a red circle", SamplingSettings(strategy="greedy", temperature=0.0))


def test_a_tokenizer_from_another_checkpoint_is_refused(hf_checkpoint, tmp_path):
    broken = str(tmp_path / "broken")
    shutil.copytree(hf_checkpoint[0], broken)
    config = json.load(open(os.path.join(broken, "config.json")))
    config["vocabulary_map"]["<eoss>"] += 1
    json.dump(config, open(os.path.join(broken, "config.json"), "w"))
    with pytest.raises(UserError, match="1 entries of the config's vocabulary_map have other ids in it"):
        import_chameleon(broken, str(tmp_path / "out"), progress=False)
