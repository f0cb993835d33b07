import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx
from PIL import Image

from cm3jax.errors import UserError
from cm3jax.image_tokenizer import pretokenize as pt
from cm3jax.image_tokenizer.model import VQGAN, VQGANConfig
from cm3jax.image_tokenizer.preprocess import preprocess_batch
from cm3jax.shapes.dataset import WorldSpec, data_source, make

CONFIG = VQGANConfig(base_channels=32, channel_multipliers=(1, 2, 2), codebook_size=64, embed_dim=16, z_channels=16)
WORLD = WorldSpec(num_train=20, num_eval=8, num_novel=4, num_emblems_unseen=16, num_memory=32)
IMAGE_KEYS = {"codes": "image", "edit_codes": "edit_image", "grounding_codes": "grounding_image",
              "edges_codes": "edges", "segmentation_codes": "segmentation"}


def random_vqgan(seed: int, config: VQGANConfig = CONFIG) -> VQGAN:
    """A VQ-GAN with weights drawn by numpy: Flax's initialisers compile each op through XLA,
    which takes 10-20 s on this machine; this takes about one."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: VQGAN(config, nnx.Rngs(0))))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            values = 1 + 0.1 * rng.standard_normal(leaf.shape)
        elif "embedding" in name:
            values = rng.standard_normal(leaf.shape)
        else:
            fan_in = np.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 100
            values = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
        return jnp.asarray(values.astype(leaf.dtype))

    return nnx.merge(graphdef, jax.tree.map_with_path(draw, state))


@pytest.fixture(scope="module")
def model():
    return random_vqgan(0)


@pytest.fixture(scope="module")
def encode_directly(model):
    """int32 [N, h, w]: the model's codes of images in [-1, 1], in one call outside pretokenize."""
    codes_of = nnx.jit(lambda m, x: m.encode(x)[1])
    return lambda images_NHWC: np.asarray(codes_of(model, jnp.asarray(images_NHWC)))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world") / "shapes")
    make(out, WORLD, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def codes(shapes, model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("codes") / "codes")
    figures = pt.pretokenize(shapes, out, model, batch_size=3, progress=False)
    assert figures["status"] == "made" and figures["images"] == 5 * sum(WORLD.counts().values())
    assert figures["images_per_second"] > 0
    assert figures["compilations"] == 1  # the short last batch is padded, not recompiled
    return out


def digests(directory):
    data_dir = os.path.join(directory, pt.NAME, pt.VERSION)
    return {name: hashlib.sha256(open(os.path.join(data_dir, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(data_dir)) if "array_record" in name}


def test_stored_codes_equal_encoding_the_images_directly(shapes, codes, encode_directly):
    grid = CONFIG.grid_size()
    pixels, stored = [], []
    for split in ("train", "memory"):
        images = data_source(shapes, split)
        codes_source = pt.read_codes(codes, split)
        assert len(codes_source) == len(images)
        examples = [images[i] for i in range(len(images))]
        rows = [codes_source[i] for i in range(len(codes_source))]
        assert [r["id"] for r in rows] == [e["id"] for e in examples]
        for field, key in IMAGE_KEYS.items():
            field_pixels = np.stack([e[key] for e in examples])
            if field_pixels.ndim == 3:  # edge and segmentation maps: one channel, replicated
                field_pixels = np.repeat(field_pixels[..., None], 3, axis=-1)
            pixels.append(field_pixels)
            stored.append(np.stack([r[field] for r in rows]))
    stored = np.concatenate(stored)
    assert stored.shape == (5 * (WORLD.num_train + WORLD.num_memory), grid, grid) and stored.dtype == np.int32
    assert len(np.unique(stored)) >= 16  # varied codes, so equality means something
    np.testing.assert_array_equal(stored, encode_directly(np.concatenate(pixels).astype(np.float32) / 127.5 - 1))


def test_the_batch_size_does_not_change_a_byte(shapes, codes, model, tmp_path):
    figures = pt.pretokenize(shapes, str(tmp_path / "codes"), model, batch_size=16, progress=False)
    assert figures["compilations"] == 1
    assert digests(str(tmp_path / "codes")) == digests(codes)


def test_the_tokenizer_is_recorded_and_another_one_is_refused(codes, model):
    fingerprint = pt.tokenizer_fingerprint(model)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64
    manifest = pt.MANIFEST.read(codes)
    assert manifest["tokenizer"]["fingerprint"] == fingerprint
    assert manifest["tokenizer"]["config"]["codebook_size"] == CONFIG.codebook_size
    info = tfds.builder_from_directory(os.path.join(codes, pt.NAME, pt.VERSION)).info
    assert info.metadata["tokenizer"]["fingerprint"] == fingerprint
    pt.check_tokenizer(codes, model)
    pt.check_tokenizer(codes, fingerprint)
    assert len(pt.read_codes(codes, "eval", tokenizer=model)) == WORLD.num_eval
    other = random_vqgan(1)
    with pytest.raises(UserError, match="made by another tokenizer"):
        pt.read_codes(codes, "train", tokenizer=other)


def test_fingerprints_follow_the_weights_only():
    a, b = random_vqgan(7), random_vqgan(7)
    assert pt.tokenizer_fingerprint(a) == pt.tokenizer_fingerprint(b)
    b.quantize.embedding[...] = b.quantize.embedding[...].at[0, 0].add(1e-6)
    assert pt.tokenizer_fingerprint(a) != pt.tokenizer_fingerprint(b)


def write_image_folder(folder) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    images = {
        "a.png": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
        "b.jpg": Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)),
        "nested/c.png": Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), "RGBA"),
        "nested/d.gif": Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8), "L").convert("P"),
    }
    for name, image in images.items():
        os.makedirs(os.path.dirname(folder / name), exist_ok=True)
        image.save(folder / name)
    (folder / "readme.txt").write_text("not an image, ignored")
    (folder / ".hidden.png").write_text("dot-files are ignored")
    return images


def test_a_folder_of_images_is_preprocessed_then_encoded(tmp_path, model, encode_directly):
    folder = tmp_path / "images"
    names = sorted(write_image_folder(folder))
    out = str(tmp_path / "codes")
    # at resolution 16, a batch shape no other test compiles
    figures = pt.pretokenize(str(folder), out, model, batch_size=3, resolution=16, progress=False)
    assert figures["images"] == len(names) and figures["compilations"] == 1
    stored = pt.read_codes(out, pt.FOLDER_SPLIT, tokenizer=model)
    rows = [stored[i] for i in range(len(stored))]
    assert [r["id"].decode() for r in rows] == names
    assert set(rows[0]) == {"id", "codes"}
    expected = encode_directly(preprocess_batch([str(folder / n) for n in names], 16))
    np.testing.assert_array_equal(np.stack([r["codes"] for r in rows]), expected)
    assert pt.MANIFEST.read(out)["source"]["files"] == len(names)


def test_an_unreadable_image_names_itself_and_leaves_nothing(tmp_path, model):
    folder = tmp_path / "images"
    write_image_folder(folder)
    (folder / "nested" / "broken.png").write_text("not an image")
    with pytest.raises(UserError, match=r"nested/broken\.png is not an image file"):
        pt.pretokenize(str(folder), str(tmp_path / "codes"), model, batch_size=2, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["images"]


def test_making_the_same_codes_again_is_a_no_op(shapes, codes, model):
    before = digests(codes)
    assert pt.pretokenize(shapes, codes, model, batch_size=5, progress=False)["status"] == "exists"
    assert digests(codes) == before


def test_codes_of_another_tokenizer_are_not_overwritten(shapes, codes):
    before = digests(codes)
    other = random_vqgan(1)
    with pytest.raises(UserError, match='already holds a different image-code dataset.*tokenizer.fingerprint: "sha256:'):
        pt.pretokenize(shapes, codes, other, progress=False)
    assert digests(codes) == before


def test_a_non_empty_foreign_directory_is_refused(shapes, model, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty; choose a new directory for the image-code dataset"):
        pt.pretokenize(shapes, str(tmp_path), model, progress=False)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_failure_while_writing_leaves_nothing_behind(shapes, model, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(pt, "_write_info", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        pt.pretokenize(shapes, str(tmp_path / "codes"), model, batch_size=8, progress=False)
    assert os.listdir(tmp_path) == []


def test_bad_requests_are_refused(shapes, codes, model, tmp_path):
    with pytest.raises(UserError, match="resolution 32, not 64"):
        pt.pretokenize(shapes, str(tmp_path / "a"), model, resolution=64, progress=False)
    with pytest.raises(UserError, match="no image files"):
        pt.pretokenize(str(tmp_path), str(tmp_path / "a"), model, progress=False)
    with pytest.raises(UserError, match="No folder at"):
        pt.pretokenize(str(tmp_path / "missing"), str(tmp_path / "a"), model, progress=False)
    with pytest.raises(UserError, match="batch_size must be at least 1"):
        pt.pretokenize(shapes, str(tmp_path / "a"), model, batch_size=0, progress=False)
    with pytest.raises(UserError, match="No image-code dataset in .*`cm3jax tokenizer pretokenize"):
        pt.read_codes(str(tmp_path), "train")
    with pytest.raises(UserError, match="no split 'dev'; it has train, eval"):
        pt.read_codes(codes, "dev")
    assert json.load(open(pt.MANIFEST.path(codes)))["grid"] == [8, 8]
