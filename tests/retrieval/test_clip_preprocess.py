import numpy as np
import pytest
from PIL import Image

from cm3jax.errors import UserError
from cm3jax.retrieval.clip_preprocess import MEAN, STD, normalize, preprocess, preprocess_batch

transformers = pytest.importorskip("transformers")
SIZE = 32


def _reference(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """transformers' CLIPImageProcessor (its PIL backend, which is what it runs without torchvision)."""
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": size},
                                                   crop_size={"height": size, "width": size})
    return processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


def _random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(50, 40, 3), (40, 71, 3), (20, 27, 3), (32, 32, 3), (33, 32, 3), (64, 64, 3)])
def test_rgb_matches_clip_image_processor(shape):
    image = _random_image(shape)
    ours = preprocess(image, SIZE)
    assert ours.shape == (SIZE, SIZE, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference(image), atol=1e-5)


def test_grey_and_rgba_match_clip_image_processor():
    grey = _random_image((45, 37), seed=1)
    np.testing.assert_allclose(preprocess(grey, SIZE), _reference(grey[..., None]), atol=1e-5)
    np.testing.assert_allclose(preprocess(grey[..., None], SIZE), _reference(grey[..., None]), atol=1e-5)
    rgba = _random_image((36, 48, 4), seed=2)
    np.testing.assert_allclose(preprocess(rgba, SIZE), _reference(rgba), atol=1e-5)
    transparent = rgba.copy()
    transparent[..., 3] = 0  # fully transparent: white
    np.testing.assert_allclose(preprocess(transparent, SIZE), (1 - MEAN) / STD * np.ones((SIZE, SIZE, 1)), atol=1e-5)


def test_native_size_images_are_only_normalised():
    images = _random_image((5, SIZE, SIZE, 3), seed=3)
    batch = preprocess_batch(images, SIZE)
    np.testing.assert_allclose(batch, (images / 255.0 - MEAN) / STD, atol=1e-5)
    np.testing.assert_allclose(batch[2], _reference(images[2]), atol=1e-5)
    np.testing.assert_array_equal(normalize(images), batch)


def test_files_match_arrays_and_unreadable_files_name_themselves(tmp_path):
    image = _random_image((30, 44, 3), seed=4)
    path = tmp_path / "picture.png"
    Image.fromarray(image).save(path)
    np.testing.assert_allclose(preprocess(str(path), SIZE), preprocess(image, SIZE), atol=0)
    mixed = preprocess_batch([str(path), image, path.read_bytes()], SIZE)
    assert mixed.shape == (3, SIZE, SIZE, 3)
    np.testing.assert_allclose(mixed[0], mixed[2], atol=0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="broken.png"):
        preprocess(str(broken), SIZE)
    with pytest.raises(UserError, match="missing.png"):
        preprocess_batch([str(tmp_path / "missing.png")], SIZE)


def test_bad_arrays_are_user_errors():
    with pytest.raises(UserError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.float32), SIZE)
    with pytest.raises(UserError, match="channels"):
        preprocess(np.zeros((8, 8, 2), np.uint8), SIZE)
    with pytest.raises(UserError, match=r"\[N, H, W, C\]"):
        preprocess_batch(np.zeros((8, 8, 3), np.uint8), SIZE)
    with pytest.raises(UserError, match="positive"):
        preprocess(np.zeros((8, 8, 3), np.uint8), 0)
