import io
import warnings

import numpy as np
import pytest
from PIL import Image

from cm3jax.errors import UserError
from cm3jax.image_tokenizer.preprocess import load_image, postprocess, preprocess, preprocess_batch
from cm3jax.shapes.render import render
from cm3jax.shapes.world import sample_scene

RED, GREEN, BLUE, WHITE = (220, 40, 40), (40, 180, 60), (40, 80, 220), (255, 255, 255)


def unit(*levels) -> np.ndarray:
    return np.asarray(levels, np.float32) / np.float32(127.5) - 1


def solid(width: int, height: int, colour) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def noise(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_grayscale_becomes_three_equal_channels():
    grey = noise(8, 8, 1)[..., 0]
    out = preprocess(Image.fromarray(grey, "L"), 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], unit(*grey.ravel()).reshape(8, 8))


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 128 * 257], [65535, 255]], np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    image = load_image(buffer.getvalue())
    assert image.mode == "I;16" and image.convert("RGB").getpixel((1, 0)) == WHITE  # PIL alone clips
    out = preprocess(image, 2)
    np.testing.assert_array_equal(out[..., 0], unit(0, 128, 255, 1).reshape(2, 2))


def test_palette_without_transparency_takes_its_colours():
    image = Image.fromarray(noise(8, 8), "RGB").quantize(colors=6)
    expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(postprocess(preprocess(image, 8)), expected)


def test_palette_with_a_transparent_index_becomes_white_there():
    image = Image.fromarray(noise(8, 8), "RGB").quantize(colors=6)
    indices = np.asarray(image)
    image.info["transparency"] = int(indices[0, 0])
    out = preprocess(image, 8)
    opaque_rgb = np.asarray(image.convert("RGB"))
    transparent = indices == indices[0, 0]
    assert np.all(out[transparent] == 1.0)
    np.testing.assert_array_equal(postprocess(out)[~transparent], opaque_rgb[~transparent])


def test_rgba_is_composited_onto_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)            # fully transparent black -> white
    rgba[0, 1] = (*RED, 255)             # opaque -> itself
    rgba[1, 0] = (0, 0, 0, 128)          # half black over white
    rgba[1, 1] = (200, 100, 50, 51)      # a fifth of a colour over white
    out = preprocess(Image.fromarray(rgba, "RGBA"), 2)
    np.testing.assert_array_equal(out[0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(out[0, 1], unit(*RED))
    np.testing.assert_array_equal(out[1, 0], unit(127, 127, 127))   # 255 * (1 - 128/255) = 127
    np.testing.assert_array_equal(out[1, 1], unit(244, 224, 214))   # 0.2 * v + 0.8 * 255


def test_grey_with_alpha_is_composited_onto_white():
    la = np.array([[[0, 0], [90, 255]], [[0, 255], [255, 0]]], np.uint8)
    out = preprocess(Image.fromarray(la, "LA"), 2)
    np.testing.assert_array_equal(out[..., 1], unit(255, 90, 0, 255).reshape(2, 2))


def test_cmyk_is_converted_to_rgb():
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0]], [[0, 0, 255, 0], [0, 0, 0, 255]]], np.uint8)
    out = postprocess(preprocess(Image.fromarray(cmyk, "CMYK"), 2))
    np.testing.assert_array_equal(out, [[WHITE, (0, 255, 255)], [(255, 255, 0), (0, 0, 0)]])


def three_bands(width: int, height: int, horizontal: bool) -> Image.Image:
    """Red | green | blue thirds, side by side (horizontal) or stacked."""
    image = solid(width, height, GREEN)
    long_side = width if horizontal else height
    third = long_side // 3
    for colour, start in ((RED, 0), (BLUE, long_side - third)):
        box = (start, 0, start + third, height) if horizontal else (0, start, width, start + third)
        image.paste(colour, box)
    return image


@pytest.mark.parametrize("horizontal", [True, False])
def test_a_non_square_image_keeps_its_centre_when_the_shorter_side_already_fits(horizontal):
    image = three_bands(48, 16, horizontal) if horizontal else three_bands(16, 48, horizontal)
    out = postprocess(preprocess(image, 16))
    assert out.shape == (16, 16, 3) and np.all(out == GREEN)


@pytest.mark.parametrize("horizontal", [True, False])
def test_a_non_square_image_is_resized_by_its_shorter_side_then_centre_cropped(horizontal):
    image = three_bands(192, 64, horizontal) if horizontal else three_bands(64, 192, horizontal)
    out = postprocess(preprocess(image, 16))
    # 192 x 64 -> 48 x 16: the crop is exactly the green third; Lanczos reaches 3 output pixels
    # across each colour boundary, so the middle of the crop is pure green and red and blue
    # never dominate anywhere in it.
    middle = out[:, 4:12] if horizontal else out[4:12, :]
    assert np.all(middle == GREEN)
    assert np.all(out[..., 1] > out[..., 0]) and np.all(out[..., 1] > out[..., 2])


def test_odd_margins_are_rounded_down_like_chameleon():
    pixels = np.zeros((4, 7, 3), np.uint8)
    pixels[:, :, 0] = np.arange(7) * 30
    out = postprocess(preprocess(Image.fromarray(pixels), 4))
    np.testing.assert_array_equal(out[0, :, 0], [30, 60, 90, 120])  # margin (7 - 4) // 2 = 1


def test_small_images_are_upscaled():
    out = preprocess(solid(3, 5, BLUE), 32)
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(postprocess(out), np.broadcast_to(BLUE, (32, 32, 3)))


def test_a_shapes_image_survives_preprocess_and_postprocess_exactly():
    for index in range(5):
        image = render(sample_scene("train", index, 0))
        assert image.shape == (32, 32, 3)
        out = preprocess(Image.fromarray(image), 32)
        assert out.min() >= -1.0 and out.max() <= 1.0
        np.testing.assert_array_equal(postprocess(out), image)


def test_postprocess_clips_and_rounds():
    np.testing.assert_array_equal(postprocess(np.array([-3.0, -1.0, 0.0, 0.004, 1.0, 2.5])),
                                  [0, 0, 128, 128, 255, 255])


def test_batches_take_paths_bytes_and_images(tmp_path):
    image = Image.fromarray(noise(40, 30))
    path = tmp_path / "a.png"
    image.save(path)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    batch = preprocess_batch([str(path), buffer.getvalue(), image], 16)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], batch[1])
    np.testing.assert_array_equal(batch[0], batch[2])
    assert preprocess_batch([], 16).shape == (0, 16, 16, 3)


def test_exif_orientation_is_applied(tmp_path):
    image = solid(30, 10, RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "turned.jpg"
    image.save(path, exif=exif)
    assert load_image(str(path)).size == (10, 30)


def test_a_text_file_named_png_is_refused_by_name(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not really a picture")
    with pytest.raises(UserError, match=r"notes\.png is not an image file"):
        load_image(str(path))
    with pytest.raises(UserError, match=r"notes\.png"):
        preprocess_batch([str(path)], 8)


def test_a_truncated_png_is_refused_by_name(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UserError, match=r"cut\.png could not be decoded: it is truncated or damaged"):
        load_image(str(path))


def test_a_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(UserError, match=r"No image file at .*nowhere\.png"):
        load_image(str(tmp_path / "nowhere.png"))
    with pytest.raises(UserError, match="is a directory"):
        load_image(str(tmp_path))


def test_bad_arguments_are_refused():
    with pytest.raises(UserError, match="takes a PIL image"):
        preprocess(np.zeros((4, 4, 3), np.uint8), 4)
    with pytest.raises(UserError, match="resolution must be a positive"):
        preprocess(solid(4, 4, RED), 0)


# ----------------------------------------------------------------------------- against Hugging Face

HF_RESCALE = 0.0078  # ChameleonImageProcessor's rescale_factor; Chameleon's own code uses 1 / 127.5
# v * 0.0078 - 1 vs v / 127.5 - 1 differ by v * (1/127.5 - 0.0078), at most 0.011 at v = 255.
HF_TOLERANCE = 255 * (1 / 127.5 - HF_RESCALE) + 1e-6


def huggingface(image: Image.Image, resolution: int) -> np.ndarray:
    """HF's PIL-backend processor (the default `ChameleonImageProcessor` needs torchvision, which
    is not installed; transformers itself falls back to this class then)."""
    pytest.importorskip("transformers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.models.chameleon.image_processing_pil_chameleon import ChameleonImageProcessorPil
    processor = ChameleonImageProcessorPil(size={"shortest_edge": resolution},
                                           crop_size={"height": resolution, "width": resolution})
    return np.asarray(processor(image, return_tensors="np")["pixel_values"][0]).transpose(1, 2, 0)


def hf_levels(values: np.ndarray) -> np.ndarray:
    return np.rint((values + 1) / HF_RESCALE)


def ours_levels(values: np.ndarray) -> np.ndarray:
    return np.rint((values + 1) * 127.5)


def comparison_images() -> dict[str, tuple[Image.Image, int]]:
    rgba = noise(80, 40, 4, seed=1)
    palette = Image.fromarray(noise(40, 40, seed=2)).quantize(colors=16)
    palette.info["transparency"] = 3
    return {
        "RGB 600x400 at 512": (Image.fromarray(noise(600, 400, seed=3)), 512),
        "RGB 300x450 at 64": (Image.fromarray(noise(300, 450, seed=4)), 64),
        "RGB 24x24 upscaled to 64": (Image.fromarray(noise(24, 24, seed=5)), 64),
        "RGBA 80x40 at 32": (Image.fromarray(rgba, "RGBA"), 32),
        "LA 80x40 at 32": (Image.fromarray(rgba[..., [0, 3]], "LA"), 32),
        "P with transparency at 32": (palette, 32),
        "L at 16": (Image.fromarray(noise(40, 40, 1, seed=6)[..., 0], "L"), 16),
        "CMYK at 32": (Image.fromarray(noise(40, 40, 4, seed=7), "CMYK"), 32),
    }


@pytest.mark.parametrize("name", list(comparison_images()))
def test_matches_huggingface_chameleon_processor(name):
    image, resolution = comparison_images()[name]
    ours, theirs = preprocess(image, resolution), huggingface(image, resolution)
    assert ours.shape == theirs.shape == (resolution, resolution, 3)
    assert np.abs(ours - theirs).max() <= HF_TOLERANCE
    np.testing.assert_array_equal(ours_levels(ours), hf_levels(theirs))


def test_where_huggingface_differs_it_is_only_the_rounding_of_the_long_side():
    # 97 x 61 at 64: the long side becomes 97 * 64 / 61 = 101.8; Chameleon rounds it to 102,
    # HF truncates it to 101, which shifts the crop by a pixel. Given the image already at
    # Chameleon's size, HF agrees with us exactly.
    image = Image.fromarray(noise(97, 61, seed=8))
    ours = preprocess(image, 64)
    assert np.abs(ours - huggingface(image, 64)).max() > 0.1
    at_chameleon_size = image.resize((102, 64), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(ours_levels(ours), hf_levels(huggingface(at_chameleon_size, 64)))
