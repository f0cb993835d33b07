import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sharding import make_mesh, mesh_context, partition_specs, state_shardings

BASE = DecoderConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64, max_seq_len=64,
                     zero_init_outputs=False)
VARIANTS = {
    "cm3leon": BASE,
    "chameleon": dataclasses.replace(BASE, norm="rmsnorm", mlp="swiglu", positions="rope", qk_norm=True),
    "chameleon_34b": dataclasses.replace(BASE, norm="rmsnorm", mlp="swiglu", positions="rope", qk_norm=True,
                                         swin_norm=True, n_kv_heads=2),
    "tied": dataclasses.replace(BASE, tie_embeddings=True),
}
VARIANTS["cm3leon_scanned"] = dataclasses.replace(VARIANTS["cm3leon"], scan_layers=True)
VARIANTS["chameleon_34b_scanned"] = dataclasses.replace(VARIANTS["chameleon_34b"], scan_layers=True)


@nnx.jit
def run(model, *args):
    return model(*args)


def _tokens(shape, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, BASE.vocab_size)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_packed_documents_do_not_see_each_other(name):
    model = Decoder(VARIANTS[name], nnx.Rngs(1))
    a, b = _tokens((1, 10), 1), _tokens((1, 6), 2)
    packed = jnp.concatenate([a, b], axis=1)
    positions = jnp.concatenate([jnp.arange(10), jnp.arange(6)])[None]
    segments = jnp.concatenate([jnp.ones(10, int), jnp.full(6, 2)])[None]
    together = run(model, packed, positions, segments)
    np.testing.assert_allclose(together[:, :10], run(model, a), atol=1e-5)
    np.testing.assert_allclose(together[:, 10:], run(model, b), atol=1e-5)


def test_causal():
    model = Decoder(VARIANTS["chameleon"], nnx.Rngs(2))
    tokens = _tokens((2, 12))
    changed = tokens.at[:, 8].set((tokens[:, 8] + 1) % BASE.vocab_size)
    before, after = run(model, tokens), run(model, changed)
    np.testing.assert_allclose(before[:, :8], after[:, :8], atol=1e-6)
    assert not np.allclose(before[:, 8:], after[:, 8:])


def test_cm3leon_initialisation():
    config = dataclasses.replace(BASE, d_model=256, mlp_hidden=1024, zero_init_outputs=True)
    model = Decoder(config, nnx.Rngs(3))
    wq = np.asarray(model.blocks[0].attention.wq[...])
    assert abs(wq.std() - 0.006 * 0.9866) < 3e-4 and np.abs(wq).max() <= 3 * 0.006
    assert abs(np.asarray(model.positions[...]).std() - 0.0002 * 0.9866) < 2e-5
    assert not np.asarray(model.blocks[0].attention.wo[...]).any()
    assert not np.asarray(model.blocks[0].mlp.wo[...]).any()


def test_bfloat16_compute_stays_close_to_float32():
    model = Decoder(VARIANTS["chameleon"], nnx.Rngs(4))
    low = Decoder(dataclasses.replace(VARIANTS["chameleon"], dtype="bfloat16"), nnx.Rngs(4))
    tokens = _tokens((2, 16))
    full, half = run(model, tokens), run(low, tokens)
    assert half.dtype == jnp.float32
    np.testing.assert_allclose(half, full, atol=0.05 * float(jnp.abs(full).max()))


@pytest.mark.parametrize("shape,scan", [((8, 1, 1), False), ((2, 2, 2), False), ((1, 2, 4), False), ((1, 2, 4), True)])
def test_sharded_forward_equals_one_device(shape, scan):
    assert len(jax.devices()) == 8, "tests/conftest.py fakes 8 CPU devices"
    config = dataclasses.replace(VARIANTS["chameleon"], n_heads=4, n_kv_heads=4, vocab_size=128, scan_layers=scan)
    model = Decoder(config, nnx.Rngs(5))
    tokens = _tokens((8, 16))
    expected = run(model, tokens)
    graphdef, state = nnx.split(model)
    mesh = make_mesh(shape)
    shardings = state_shardings(state, mesh)
    with mesh_context(mesh):
        sharded_state = jax.device_put(state, shardings)
        forward = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
        got = forward(sharded_state, jax.device_put(tokens, jax.sharding.NamedSharding(mesh, jax.P(("data", "fsdp")))))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@nnx.jit
def _cached(model, tokens, positions, cache):
    hidden, cache = model.cached(tokens, positions, cache)
    return model.logits(hidden), cache


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_cached_decoding_equals_the_full_forward_pass_at_every_step(name):
    model = Decoder(VARIANTS[name], nnx.Rngs(3))
    tokens = np.asarray(_tokens((3, 40), 3))
    full = np.asarray(run(model, jnp.asarray(tokens)))
    lengths, width = np.array([5, 9, 17]), 20  # rows of different lengths, left-aligned, padded to 20
    prompt = np.where(np.arange(width) < lengths[:, None], tokens[:, :width], 0)
    logits, cache = _cached(model, jnp.asarray(prompt), jnp.broadcast_to(jnp.arange(width), (3, width)),
                            model.init_cache(3, 48))
    rows = np.arange(3)
    np.testing.assert_allclose(np.asarray(logits)[rows, lengths - 1], full[rows, lengths - 1], rtol=1e-5, atol=1e-5)
    positions = lengths.copy()
    for _ in range(20):
        logits, cache = _cached(model, jnp.asarray(tokens[rows, positions])[:, None], jnp.asarray(positions)[:, None],
                                cache)
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[rows, positions], rtol=1e-5, atol=1e-5)
        positions += 1


def test_image_index_counts_each_image_tokens_place_in_its_run_and_restarts_per_document():
    model = Decoder(dataclasses.replace(BASE, image_positions=4, image_id_start=100, image_id_end=120), nnx.Rngs(0))
    tokens = jnp.array([[1, 100, 101, 119, 2, 105, 106, 107, 108, 109, 3, 3]])
    segments = jnp.array([[1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]])
    np.testing.assert_array_equal(model.image_index(tokens), [[-1, 0, 1, 2, -1, 0, 1, 2, 3, 4, -1, -1]])
    np.testing.assert_array_equal(model.image_index(tokens, segments), [[-1, 0, 1, 2, -1, 0, 1, 2, 0, 1, -1, -1]])


def _with_codebook(model: Decoder, codebook_KF) -> Decoder:
    state = nnx.state(model, nnx.Param)
    state["image_codes"][...] = jnp.asarray(codebook_KF, jnp.float32)
    nnx.update(model, state)
    return model


def test_codes_that_look_alike_share_what_is_learned_about_one_of_them():
    """One gradient step towards image code 0 raises code 1 (the same codebook vector) far more
    than code 2 (an orthogonal one); the codebook itself gets no gradient."""
    config = dataclasses.replace(BASE, image_code_features=4, image_id_start=100, image_id_end=108)
    codebook = np.zeros((8, 4), np.float32)
    codebook[0, 0] = codebook[1, 0] = codebook[2, 1] = 1.0
    model = _with_codebook(Decoder(config, nnx.Rngs(0)), codebook)
    tokens = jnp.array([[1, 2, 3, 4]])

    def loss(model):
        return -jax.nn.log_softmax(model(tokens)[0, -1])[100]

    grads = nnx.grad(loss)(model)
    assert float(jnp.abs(grads["image_codes"][...]).max()) == 0.0
    before = np.asarray(run(model, tokens))[0, -1, 100:103]
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.5 * g, state, nnx.state(grads, nnx.Param)))
    gain = np.asarray(run(model, tokens))[0, -1, 100:103] - before
    assert gain[0] > 0 and gain[1] > 0.25 * gain[0] and gain[1] > 5 * abs(gain[2])


def test_code_features_folded_into_the_head_give_the_logits_of_the_two_products():
    """Many tokens fold W_out c^T into the head once; a few (decoding) take x W_out, then c^T."""
    config = dataclasses.replace(BASE, image_code_features=4, image_id_start=100, image_id_end=108)
    model = _with_codebook(Decoder(config, nnx.Rngs(0)), np.random.default_rng(0).normal(size=(8, 4)))
    model.image_code_out[...] = jax.random.normal(jax.random.key(1), model.image_code_out[...].shape)
    x = jax.random.normal(jax.random.key(2), (2, 32, config.d_model))
    folded = np.asarray(model.logits(x))
    one_by_one = np.concatenate([np.asarray(model.logits(x[:, t:t + 1])) for t in range(32)], axis=1)
    np.testing.assert_allclose(folded, one_by_one, rtol=1e-5, atol=1e-5)
    assert np.abs(folded[..., 100:108]).max() > 10 * np.abs(folded[..., :100]).max(), "the features carry image logits"


def test_a_cache_longer_than_the_context_is_refused():
    model = Decoder(BASE, nnx.Rngs(0))
    with pytest.raises(ValueError, match="exceeds the context of 64"):
        model.init_cache(1, 65)


def _scanned_copy(model: Decoder, **changes) -> Decoder:
    """A scan_layers decoder holding `model`'s weights, its blocks' parameters stacked [L, ...]."""
    weights = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    layers = weights.pop("blocks")
    weights["blocks"] = jax.tree.map(lambda *per_layer: jnp.stack(per_layer), *(layers[i] for i in sorted(layers)))
    scanned = Decoder(dataclasses.replace(model.config, scan_layers=True, **changes), nnx.Rngs(99))
    state = nnx.state(scanned, nnx.Param)
    nnx.replace_by_pure_dict(state, weights)
    nnx.update(scanned, state)
    return scanned


def _loss_and_grads(model: Decoder, tokens_BT: jax.Array):
    graphdef, params = nnx.split(model, nnx.Param)
    weights_BTV = jax.random.normal(jax.random.key(7), (*tokens_BT.shape, model.config.vocab_size))
    loss = lambda p: jnp.sum(nnx.merge(graphdef, p)(tokens_BT) * weights_BTV)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("name,remat", [("cm3leon", False), ("chameleon_34b", False), ("chameleon", True)])
def test_scanned_blocks_give_the_unrolled_logits_and_gradients(name, remat):
    unrolled = Decoder(dataclasses.replace(VARIANTS[name], n_layers=3), nnx.Rngs(6))
    scanned = _scanned_copy(unrolled, remat=remat)
    tokens = _tokens((2, 16), 6)
    np.testing.assert_allclose(run(scanned, tokens), run(unrolled, tokens), rtol=1e-6, atol=1e-6)
    loss, grads = _loss_and_grads(unrolled, tokens)
    scanned_loss, scanned_grads = _loss_and_grads(scanned, tokens)
    np.testing.assert_allclose(scanned_loss, loss, rtol=1e-6)
    expected = nnx.to_pure_dict(grads)
    layers = expected.pop("blocks")
    expected["blocks"] = jax.tree.map(lambda *per_layer: np.stack(per_layer), *(layers[i] for i in sorted(layers)))
    got = nnx.to_pure_dict(scanned_grads)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_remat_is_applied_inside_the_scan():
    config = dataclasses.replace(BASE, scan_layers=True, remat=True)
    graphdef, params = nnx.split(Decoder(config, nnx.Rngs(0)), nnx.Param)
    jaxpr = jax.make_jaxpr(lambda p: nnx.merge(graphdef, p)(_tokens((1, 8))))(params).jaxpr
    (scan,) = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert scan.params["length"] == config.n_layers
    assert any(e.primitive.name in ("checkpoint", "remat2") for e in scan.params["jaxpr"].jaxpr.eqns)


def test_scanned_parameters_carry_a_replicated_layer_axis():
    config = dataclasses.replace(BASE, scan_layers=True)
    state = nnx.state(Decoder(config, nnx.Rngs(0)), nnx.Param)
    wq = state["blocks"]["attention"]["wq"]
    assert wq.shape == (config.n_layers, config.d_model, config.n_heads, config.head_size)
    assert wq.get_metadata("logical_axes") == ("layers", "embed", "heads", "head_dim")
    specs = partition_specs(state)
    assert specs["blocks"]["attention"]["wq"].get_value() == jax.P(None, "fsdp", "tensor", None)
