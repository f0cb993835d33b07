import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from cm3jax.checkpoints import Checkpoints, Json, checkpoint_dir
from cm3jax.errors import UserError


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(4, 2, rngs=rngs)
        self.norm = nnx.LayerNorm(2, rngs=rngs)


def _tree(offset: float = 0.0) -> dict:
    return {"w": jnp.arange(16, dtype=jnp.float32).reshape(8, 2) + offset, "count": jnp.int32(7)}


def test_arrays_and_json_items_round_trip(tmp_path):
    with Checkpoints(str(tmp_path), async_save=False) as store:
        store.save(3, {"params": _tree(), "meta": Json(name="run", sizes=[1, 2], nested={"a": 0.5})})
    with Checkpoints(str(tmp_path), read_only=True) as store:
        assert store.latest_step() == 3
        restored = store.restore(3, {"params": _tree(offset=100.0), "meta": Json()})
    np.testing.assert_array_equal(restored["params"]["w"], _tree()["w"])
    assert int(restored["params"]["count"]) == 7
    assert restored["meta"] == {"name": "run", "sizes": [1, 2], "nested": {"a": 0.5}}
    assert os.path.isdir(os.path.join(checkpoint_dir(str(tmp_path)), "3"))


def test_a_restore_takes_the_shardings_asked_for_whatever_saved_it(tmp_path):
    mesh = jax.make_mesh((8,), ("data",), devices=jax.devices()[:8])
    sharded = jax.device_put(_tree()["w"], NamedSharding(mesh, PartitionSpec("data")))
    assert len(sharded.addressable_shards) == 8
    with Checkpoints(str(tmp_path)) as store:  # asynchronous: close waits for the write
        store.save(1, {"params": {"w": sharded}})
    two = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    like = {"w": jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=NamedSharding(two, PartitionSpec(None, "data")))}
    with Checkpoints(str(tmp_path), read_only=True) as store:
        w = store.restore(1, {"params": like})["params"]["w"]
    assert w.sharding == like["w"].sharding and w.addressable_shards[0].data.shape == (8, 1)
    np.testing.assert_array_equal(w, _tree()["w"])


@pytest.mark.parametrize("as_state", [False, True])
def test_restore_module_puts_a_modules_state_on_the_first_device(tmp_path, as_state):
    model = Tiny(nnx.Rngs(0))
    mesh = jax.make_mesh((2,), ("data",), devices=jax.devices()[:2])
    state = jax.device_put(nnx.state(model), NamedSharding(mesh, PartitionSpec()))  # trained on two devices
    with Checkpoints(str(tmp_path), async_save=False) as store:
        store.save(5, {"params": state if as_state else nnx.to_pure_dict(state)})
    with Checkpoints(str(tmp_path), read_only=True) as store:
        restored = store.restore_module(5, lambda: Tiny(nnx.Rngs(1)), as_state=as_state)
    for got, want in zip(jax.tree.leaves(nnx.state(restored)), jax.tree.leaves(nnx.state(model))):
        assert got.sharding == SingleDeviceSharding(jax.local_devices()[0])
        np.testing.assert_array_equal(got, want)


def test_reading_a_missing_or_empty_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Checkpoints(str(tmp_path / "none"), read_only=True)
    assert not (tmp_path / "none").exists(), "a read-only open creates nothing"
    with pytest.raises(UserError, match=r"No checkpoints in .*none.*does not exist. Train the VQ-GAN with `cm3jax make one`"):
        Checkpoints.open_latest(str(tmp_path / "none"), "VQ-GAN", "cm3jax make one")
    os.makedirs(checkpoint_dir(str(tmp_path / "empty")))
    with pytest.raises(UserError, match=r"No complete CLIP checkpoint .*no finished step.*`cm3jax make one`"):
        Checkpoints.open_latest(str(tmp_path / "empty"), "CLIP", "cm3jax make one")


def test_open_latest_gives_the_newest_complete_step(tmp_path):
    with Checkpoints(str(tmp_path), async_save=False) as store:
        for step in (2, 4):
            store.save(step, {"params": _tree(step)})
    os.makedirs(os.path.join(checkpoint_dir(str(tmp_path)), "6.orbax-checkpoint-tmp-0"))  # a save cut short
    store, step = Checkpoints.open_latest(str(tmp_path), "test", "train")
    with store:
        assert step == 4
        np.testing.assert_array_equal(store.restore(4, {"params": _tree()})["params"]["w"], _tree(4)["w"])


def test_a_corrupt_step_is_refused_with_the_fix(tmp_path):
    with Checkpoints(str(tmp_path), async_save=False) as store:
        store.save(1, {"params": _tree()})
    step_dir = os.path.join(checkpoint_dir(str(tmp_path)), "1")
    for root, _, files in os.walk(os.path.join(step_dir, "params")):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with Checkpoints(str(tmp_path), read_only=True) as store:
        with pytest.raises(UserError, match=f"{step_dir} is corrupt.*Delete that step directory"):
            store.restore(1, {"params": _tree()})


def test_a_tree_of_another_shape_is_refused(tmp_path):
    with Checkpoints(str(tmp_path), async_save=False) as store:
        store.save(1, {"params": _tree()})
    with Checkpoints(str(tmp_path), read_only=True) as store:
        with pytest.raises(UserError, match="of another model"):
            store.restore(1, {"params": {"w": jnp.zeros((8, 2)), "other": jnp.zeros(3)}})


def test_keep_prunes_all_but_the_newest_steps(tmp_path):
    with Checkpoints(str(tmp_path), keep=2, async_save=False) as store:
        for step in range(1, 6):
            store.save(step, {"params": _tree(step)})
    assert sorted(os.listdir(checkpoint_dir(str(tmp_path)))) == ["4", "5"]
