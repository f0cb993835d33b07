import jax
import numpy as np
import pytest
from flax import nnx

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.codec import CodeDecoder, ImageEncoder, code_looks, decode_codes, encode_images, to_uint8
from cm3jax.image_tokenizer.model import VQGANConfig
from cm3jax.image_tokenizer.preprocess import to_unit_range
from cm3jax.sharding import make_mesh, mesh_context
from tests.image_tokenizer.test_pretokenize import random_vqgan

# Its own shapes, so no other test module has compiled them (the compile counts below are exact).
CONFIG = VQGANConfig(resolution=16, base_channels=32, channel_multipliers=(1, 2), codebook_size=32, embed_dim=8,
                     z_channels=16)


@pytest.fixture(scope="module")
def model():
    return random_vqgan(3, CONFIG)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (11, 16, 16, 3), dtype=np.uint8)


def test_a_round_trip_equals_the_model_itself(model, images):
    codes = encode_images(model, images)
    want = nnx.jit(lambda m, x: m.encode(to_unit_range(x))[1])(model, images)
    assert codes.shape == (11, 8, 8) and codes.dtype == np.int32
    assert len(np.unique(codes)) > 5, "varied codes, so equality means something"
    np.testing.assert_array_equal(codes, np.asarray(want))
    pixels = decode_codes(model, codes)
    assert pixels.shape == (11, 16, 16, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.asarray(nnx.jit(lambda m, c: to_uint8(m.decode_codes(c)))(model, codes)))


def test_padding_the_last_batch_changes_nothing(model, images):
    whole = encode_images(model, images, batch_size=16)
    in_batches = encode_images(model, images, batch_size=8)  # 8 + 3 padded to 8 (on 8 devices or 1)
    np.testing.assert_array_equal(in_batches, whole)
    np.testing.assert_array_equal(encode_images(model, images[:3]), whole[:3])
    np.testing.assert_array_equal(decode_codes(model, whole, batch_size=8), decode_codes(model, whole))


def test_a_callers_mesh_over_other_devices_changes_nothing(model, images):
    # as in a multi-process run, where the training mesh spans devices this process cannot address
    if jax.local_device_count() < 2:
        pytest.skip("needs two devices")
    whole = encode_images(model, images)
    with mesh_context(make_mesh((1, 1, 1), jax.local_devices()[-1:])):
        codes = encode_images(model, images)
        pixels = decode_codes(model, codes)
    np.testing.assert_array_equal(codes, whole)
    np.testing.assert_array_equal(pixels, decode_codes(model, whole))


def test_dispatch_compiles_once_and_returns_before_reading_back(model, images):
    encoder = ImageEncoder(model, 24)
    first, second = encoder.dispatch(images[:10]), encoder.dispatch(images[10:])
    assert isinstance(first, jax.Array) and first.shape == (encoder.batch_size, 8, 8)
    assert encoder.compilations == 1  # the second, shorter batch is padded, not recompiled
    np.testing.assert_array_equal(np.concatenate([np.asarray(first)[:10], np.asarray(second)[:1]]),
                                  encode_images(model, images))
    assert ImageEncoder(model, 24).compilations == 0
    with pytest.raises(UserError, match="passed to a batch of 24"):
        encoder.dispatch(np.zeros((25, 16, 16, 3), np.uint8))


def test_empty_inputs_give_empty_outputs(model):
    assert encode_images(model, np.zeros((0, 16, 24, 3), np.uint8)).shape == (0, 8, 12)
    assert decode_codes(model, np.zeros((0, 8, 8), np.int32)).shape == (0, 16, 16, 3)


def test_bad_inputs_are_user_errors(model, images):
    with pytest.raises(UserError, match="uint8 RGB"):
        encode_images(model, images.astype(np.float32) / 127.5 - 1)
    with pytest.raises(UserError, match="uint8 RGB"):
        encode_images(model, images[..., 0])
    with pytest.raises(UserError, match="multiples of the tokenizer's downsampling factor 2"):
        encode_images(model, images[:, :15])
    with pytest.raises(UserError, match="integer grids"):
        decode_codes(model, np.zeros((2, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"lie in \[0, 32\).*\[32, 32\]"):
        decode_codes(model, np.full((2, 8, 8), 32))
    with pytest.raises(UserError, match=r"\[-1, -1\]"):
        CodeDecoder(model).dispatch(np.full((1, 8, 8), -1))
    with pytest.raises(UserError, match="batch_size must be at least 1"):
        ImageEncoder(model, 0)


def test_a_codes_look_is_the_middle_patch_of_a_field_of_it(model):
    looks = code_looks(model)
    assert looks.shape == (32, 2, 2, 3) and looks.dtype == np.uint8
    fields = decode_codes(model, np.broadcast_to(np.array([0, 5, 31])[:, None, None], (3, 8, 8)))
    np.testing.assert_array_equal(looks[[0, 5, 31]], fields[:, 8:10, 8:10])
    np.testing.assert_array_equal(code_looks(model, grid=3)[7], decode_codes(model, np.full((1, 3, 3), 7))[0, 2:4, 2:4])
