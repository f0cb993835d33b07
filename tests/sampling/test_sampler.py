import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sampling import sampler
from cm3jax.sampling.modality import advance, allowed_table, state_after
from cm3jax.sampling.sampler import bucket, generate
from cm3jax.sampling.strategies import SamplingSettings, choose
from cm3jax.vocab import MultimodalVocab

VOCAB = MultimodalVocab(100, 64, 8)
CONTEXT = 64


CONFIG = DecoderConfig(vocab_size=VOCAB.padded_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                       mlp_hidden=64, max_seq_len=CONTEXT, zero_init_outputs=False, positions="rope",
                       norm="rmsnorm", mlp="swiglu", qk_norm=True, init_std=0.3)  # peaked logits


@pytest.fixture(scope="module")
def model():
    return Decoder(CONFIG, nnx.Rngs(0))


@pytest.fixture(scope="module")
def image_switches_model():
    """Image tokens also embed their place in their image, which a decode step is told, and are
    embedded and predicted through their codebook vectors."""
    model = Decoder(dataclasses.replace(CONFIG, image_positions=VOCAB.image_tokens, image_code_features=3,
                                        image_id_start=VOCAB.image_offset, image_id_end=VOCAB.size,
                                        position_init_std=0.3), nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    state["image_codes"][...] = jax.random.normal(jax.random.key(1), state["image_codes"][...].shape)
    nnx.update(model, state)
    return model


@pytest.fixture(scope="module")
def scanned_model():
    return Decoder(dataclasses.replace(CONFIG, scan_layers=True), nnx.Rngs(0))


def _text(*pieces):
    return np.array([VOCAB.text_offset + p for p in pieces], np.int32)


CAPTIONS = [np.concatenate([_text(3, 4, 5), [VOCAB.break_id]]), np.concatenate([_text(7), [VOCAB.break_id]]),
            np.concatenate([_text(9, 9, 2, 8, 1), [VOCAB.break_id]])]
UNCOND = np.array([VOCAB.mask_id, VOCAB.break_id], np.int32)


@nnx.jit
def _forward(model, tokens):
    return model(tokens)


def _reference(model, request, settings, max_new, seed, sample_id, until_image):
    """Full forward passes over each stream's whole sequence at every step, the same draw."""
    streams = [list(p) for p in request]
    state, count = state_after(request[0], VOCAB)
    table = allowed_table(VOCAB, VOCAB.padded_size)
    key = jax.random.fold_in(jax.random.key(seed), sample_id)
    contrastive = settings.strategy == "cd_k" or (settings.strategy == "mix" and sample_id % 2 == 1)
    out = []
    for t in range(max_new):
        logits = np.stack([np.asarray(_forward(model, jnp.asarray([s + [0] * (CONTEXT - len(s))])))[0, len(s) - 1]
                           for s in streams])
        token = int(choose(jnp.asarray(logits), jnp.asarray(table[state]), jax.random.fold_in(key, t),
                           jnp.bool_(contrastive), settings, settings.dynamic()))
        out.append(token)
        state, count = (int(v) for v in advance(state, count, token, VOCAB))
        if token == VOCAB.eos_id or (until_image and state == 2):
            break
        for s in streams:
            s.append(token)
    return out


@pytest.mark.parametrize("settings, streams, model_name", [
    (SamplingSettings(strategy="greedy"), 1, "model"),
    (SamplingSettings(temperature=0.8, top_p=0.9, top_k=20), 1, "model"),
    (SamplingSettings(temperature=1.0, cfg_scale=3.0), 2, "model"),
    (SamplingSettings(strategy="mix", temperature=0.7, top_p=0.8, cfg_scale=2.0, cd_alpha=0.2, cd_k=4), 2, "model"),
    (SamplingSettings(temperature=1.0, image_scale=1.5, text_scale=4.0), 3, "model"),
    (SamplingSettings(temperature=1.0, cfg_scale=3.0), 2, "scanned_model"),  # its cache: one StackedCache
    (SamplingSettings(temperature=1.0, cfg_scale=3.0), 2, "image_switches_model"),
])
def test_cached_sampling_equals_full_forward_sampling(request, settings, streams, model_name):
    model = request.getfixturevalue(model_name)
    image_only = np.concatenate([[VOCAB.mask_id], CAPTIONS[0][1:]])
    requests = [(CAPTIONS[0], UNCOND, UNCOND)[:streams] if streams < 3 else (CAPTIONS[0], image_only, UNCOND),
                (CAPTIONS[2], UNCOND, UNCOND)[:streams] if streams < 3 else (CAPTIONS[2], image_only, UNCOND)]
    out = generate(model, VOCAB, requests, settings, max_new=12, seed=5, until="image")
    for i, request in enumerate(requests):
        expected = _reference(model, request, settings, 12, 5, i, until_image=True)
        np.testing.assert_array_equal(out.sample(i), expected)
        assert out.finished[i] and len(expected) == VOCAB.image_tokens


def test_cfg_scale_one_gives_exactly_the_conditional_samples(model):
    settings = SamplingSettings(temperature=1.0, top_p=0.95, cfg_scale=1.0)
    alone = generate(model, VOCAB, [(c,) for c in CAPTIONS], settings, 20, seed=11)
    guided = generate(model, VOCAB, [(c, UNCOND) for c in CAPTIONS], settings, 20, seed=11)
    np.testing.assert_array_equal(alone.tokens, guided.tokens)
    stronger = generate(model, VOCAB, [(c, UNCOND) for c in CAPTIONS], dataclasses.replace(settings, cfg_scale=5.0),
                        20, seed=11)
    assert not np.array_equal(stronger.tokens, alone.tokens)


def test_a_batch_gives_the_same_samples_as_one_by_one(model):
    settings = SamplingSettings(strategy="mix", temperature=1.0, top_p=0.9, cfg_scale=3.0)
    requests = [(c, UNCOND) for c in CAPTIONS]
    batch = generate(model, VOCAB, requests, settings, 20, seed=7, sample_ids=[4, 5, 6])
    for i, request in enumerate(requests):
        alone = generate(model, VOCAB, [request], settings, 20, seed=7, sample_ids=[4 + i])
        np.testing.assert_array_equal(alone.tokens[0], batch.tokens[i])
    topp = generate(model, VOCAB, requests, dataclasses.replace(settings, strategy="sample"), 20, seed=7,
                    sample_ids=[4, 5, 6])
    cdk = generate(model, VOCAB, requests, dataclasses.replace(settings, strategy="cd_k"), 20, seed=7,
                   sample_ids=[4, 5, 6])
    np.testing.assert_array_equal(batch.tokens[[0, 2]], topp.tokens[[0, 2]])  # even ids draw top-p
    np.testing.assert_array_equal(batch.tokens[1], cdk.tokens[1])  # odd ids draw CD-K


def test_text_generation_stops_at_eos_and_never_emits_image_codes(model):
    out = generate(model, VOCAB, [(_text(1, 2),)] * 6, SamplingSettings(temperature=1.5), 40, seed=1,
                   sample_ids=range(6))
    for i in range(6):
        sample = out.sample(i)
        ends = np.flatnonzero(sample == VOCAB.eos_id)
        assert (ends.size == 0 and len(sample) == 40) or (ends.tolist() == [len(sample) - 1] and out.finished[i])
        state, count = state_after(_text(1, 2), VOCAB)
        for token in sample:  # an image code only ever follows a <break> or another code
            if VOCAB.is_image(token):
                assert state in (1, 3)
            state, count = advance(state, count, token, VOCAB)


def test_new_prompt_lengths_in_a_bucket_do_not_compile_again(model):
    settings = SamplingSettings(temperature=0.9)
    generate(model, VOCAB, [(CAPTIONS[0],)], settings, 8, until="image")
    sizes = sampler._prefill._cache_size(), sampler._decode._cache_size()
    generate(model, VOCAB, [(CAPTIONS[2],)], dataclasses.replace(settings, temperature=0.5, top_p=0.7), 8,
             until="image")
    assert (sampler._prefill._cache_size(), sampler._decode._cache_size()) == sizes
    assert [bucket(n, 100) for n in (1, 16, 17, 40, 90)] == [16, 16, 32, 64, 100]


def test_bad_requests_are_refused_with_the_fix(model):
    with pytest.raises(UserError, match="prompts may be at most 44 tokens"):
        generate(model, VOCAB, [(np.zeros(50, np.int32),)], SamplingSettings(), 20)
    with pytest.raises(UserError, match="unconditional"):
        generate(model, VOCAB, [(CAPTIONS[0],)], SamplingSettings(strategy="cd_k"), 8)
    with pytest.raises(UserError, match="same number of guidance streams"):
        generate(model, VOCAB, [(CAPTIONS[0],), (CAPTIONS[1], UNCOND)], SamplingSettings(), 8)
    with pytest.raises(UserError, match="empty"):
        generate(model, VOCAB, [(np.zeros(0, np.int32),)], SamplingSettings(), 8)


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 4, 2)])
def test_sampling_with_sharded_parameters_equals_one_device(model, shape):
    from cm3jax.sharding import make_mesh, mesh_context, state_shardings
    settings = SamplingSettings(strategy="mix", temperature=1.0, top_p=0.9, cfg_scale=3.0)
    requests = [(c, UNCOND) for c in CAPTIONS[:2]]
    expected = generate(model, VOCAB, requests, settings, 12, seed=2)
    graphdef, state = nnx.split(model)
    mesh = make_mesh(shape)
    with mesh_context(mesh):
        sharded = nnx.merge(graphdef, jax.device_put(state, state_shardings(state, mesh)))
        got = generate(sharded, VOCAB, requests, settings, 12, seed=2)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
