import jax
import numpy as np
import pytest
from flax import nnx

from cm3jax.config import decoder_config, decoder_experiment
from cm3jax.model.decoder import Decoder
from cm3jax.sharding import make_mesh, mesh_context
from cm3jax.train.optimizer import make_optimizer
from cm3jax.train.step import jit_train_step, loss_and_metrics

CONFIG = decoder_experiment(
    dict(vocab_size=128, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64, max_seq_len=32, norm="rmsnorm",
         mlp="swiglu", positions="rope", qk_norm=True),
    dict(warmup_steps=2, peak_lr=1e-2, z_loss=1e-4))


def _batch(seed=0, batch=8, length=16):
    rng = np.random.default_rng(seed)
    segments = np.ones((batch, length), np.int32)
    segments[:, length // 2:] = 2  # two packed documents per row
    positions = np.concatenate([np.arange(length // 2)] * 2)[None].repeat(batch, 0)
    return {"inputs": rng.integers(0, 128, (batch, length)), "targets": rng.integers(0, 128, (batch, length)),
            "weights": (rng.random((batch, length)) > 0.1).astype(np.float32), "positions": positions,
            "segments": segments}


def _losses(mesh_shape, steps, batches, config=CONFIG):
    graphdef, params = nnx.split(Decoder(decoder_config(config), nnx.Rngs(0)), nnx.Param)
    tx, schedule = make_optimizer(CONFIG.train, 100)
    opt_state = tx.init(params)
    mesh = make_mesh(mesh_shape, jax.devices()[:int(np.prod(mesh_shape))])
    losses = []
    with mesh_context(mesh):
        step = jit_train_step(graphdef, tx, schedule, params, opt_state, mesh, CONFIG.train.z_loss)
        for i in range(steps):
            params, opt_state, metrics = step(params, opt_state, batches[i % len(batches)])
            losses.append(float(metrics["loss"]))
    return np.array(losses)


@pytest.fixture(scope="module")
def one_device():
    return _losses((1, 1, 1), 4, [_batch(0), _batch(1)])


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_sharded_training_equals_one_device(one_device, shape):
    np.testing.assert_allclose(_losses(shape, 4, [_batch(0), _batch(1)]), one_device, rtol=1e-5)


def test_overfits_one_batch():
    losses = _losses((1, 1, 1), 150, [_batch(3, batch=4)])
    assert losses[0] > 4.0 and losses[-1] < 0.1


def test_bfloat16_compute_trains_close_to_float32(one_device):
    config = CONFIG.copy_and_resolve_references()
    config.model.dtype = "bfloat16"
    np.testing.assert_allclose(_losses((1, 1, 1), 4, [_batch(0), _batch(1)], config), one_device, rtol=2e-2)


def test_accuracy_counts_argmax_hits():
    graphdef, params = nnx.split(Decoder(decoder_config(CONFIG), nnx.Rngs(0)), nnx.Param)
    batch = _batch(4)
    logits = nnx.merge(graphdef, params)(batch["inputs"], batch["positions"], batch["segments"])
    batch["targets"] = np.where(np.arange(16) % 2 == 0, np.asarray(logits.argmax(-1)), batch["targets"])
    hits = (np.asarray(logits.argmax(-1)) == batch["targets"]) * batch["weights"]
    _, metrics = loss_and_metrics(params, graphdef, batch, 0.0)
    assert float(metrics["accuracy"]) == pytest.approx(hits.sum() / batch["weights"].sum())


def test_the_step_reports_the_learning_rate_of_its_update():
    graphdef, params = nnx.split(Decoder(decoder_config(CONFIG), nnx.Rngs(0)), nnx.Param)
    tx, schedule = make_optimizer(CONFIG.train, 100)
    opt_state = tx.init(params)
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    rates = []
    with mesh_context(mesh):
        step = jit_train_step(graphdef, tx, schedule, params, opt_state, mesh)
        for _ in range(4):
            params, opt_state, metrics = step(params, opt_state, _batch(0))
            rates.append(float(metrics["learning_rate"]))
    # warmup_steps=2 to peak 1e-2, then linear decay to 1e-3 at step 100
    np.testing.assert_allclose(rates, [0.0, 5e-3, 1e-2, 1e-2 - 9e-3 / 98], rtol=1e-5)
