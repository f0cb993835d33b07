"""Image sets as .npz files: a round trip keeps every byte, and a wrong dtype, shape, key or
file is refused with a message that names the problem."""

import numpy as np
import pytest

from cm3jax.shapes.image_files import IMAGES_KEY, read_images, write_images
from cm3jax.shapes.render import render_many
from cm3jax.shapes.spec import ShapesError
from cm3jax.shapes.world import sample_split


def test_round_trip_keeps_every_byte(tmp_path):
    images = render_many(sample_split("eval", 5))
    path = str(tmp_path / "images.npz")
    write_images(path, images)
    read = read_images(path)
    assert read.dtype == np.uint8 and read.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(read, images)
    with np.load(path) as data:
        assert data.files == [IMAGES_KEY]


def test_an_empty_set_round_trips(tmp_path):
    path = str(tmp_path / "empty.npz")
    write_images(path, np.zeros((0, 32, 32, 3), np.uint8))
    assert read_images(path).shape == (0, 32, 32, 3)


def test_writing_bad_images_is_refused(tmp_path):
    path = str(tmp_path / "bad.npz")
    with pytest.raises(ShapesError, match=r"\[N, R, R, 3\], got shape \(32, 32, 3\)"):
        write_images(path, np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ShapesError, match="image 0 has dtype float32"):
        write_images(path, np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ShapesError, match="resolution 48"):
        write_images(path, np.zeros((2, 48, 48, 3), np.uint8))
    assert not (tmp_path / "bad.npz").exists()


def test_reading_bad_files_names_the_problem(tmp_path):
    with pytest.raises(ShapesError, match="No images file at .*missing.npz"):
        read_images(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ShapesError, match="junk.npz is not a readable .npz file"):
        read_images(str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "key.npz", pixels=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ShapesError, match=r"holds \['pixels'\], not an array named 'images'"):
        read_images(str(tmp_path / "key.npz"))
    np.savez(tmp_path / "dtype.npz", images=np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ShapesError, match="dtype float32; expected uint8"):
        read_images(str(tmp_path / "dtype.npz"))
    np.savez(tmp_path / "shape.npz", images=np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ShapesError, match=r"shape \(32, 32, 3\); expected \[N, R, R, 3\]"):
        read_images(str(tmp_path / "shape.npz"))
    np.savez(tmp_path / "side.npz", images=np.zeros((1, 32, 30, 3), np.uint8))
    with pytest.raises(ShapesError, match=r"side.npz image 0 has shape \(32, 30, 3\)"):
        read_images(str(tmp_path / "side.npz"))
