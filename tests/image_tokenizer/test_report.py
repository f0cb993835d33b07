"""A tokenizer run's pictures: the reconstruction grid shows (original, reconstruction) pairs with
the misses first, captioned OK/MISS, and the loss curves are drawn from metrics records."""

import numpy as np
from PIL import Image

from cm3jax.image_tokenizer import report
from cm3jax.image_tokenizer.report import save_loss_curves, save_reconstruction_grid
from cm3jax.shapes.preview import CELL
from cm3jax.shapes.world import sample_split


def _solid(values):
    images = np.zeros((len(values), 32, 32, 3), np.uint8)
    images[..., 0] = np.asarray(values, np.uint8)[:, None, None]
    return images


def _cell_reds(path, n):
    grid = np.asarray(Image.open(path).convert("RGB"))
    return [int(grid[4 + CELL // 2, 4 + i * (CELL + 4) + CELL // 2, 0]) for i in range(n)]


def test_reconstruction_grid_puts_misses_first(tmp_path, monkeypatch):
    scenes = sample_split("eval", 4)
    originals, reconstructions = _solid([10, 20, 30, 40]), _solid([11, 21, 31, 41])
    captions = []
    real_grid = report.captioned_grid
    monkeypatch.setattr(report, "captioned_grid", lambda images, texts, columns: (
        captions.extend(texts), real_grid(images, texts, columns))[1])
    path = str(tmp_path / "reconstructions.png")
    save_reconstruction_grid(path, scenes, originals, reconstructions, [True, False, True, False])
    assert _cell_reds(path, 8) == [20, 21, 40, 41, 10, 11, 30, 31], "scene 1 and 3 missed: they come first"
    assert captions == [scenes[1].caption, f"MISS {scenes[1].id}", scenes[3].caption, f"MISS {scenes[3].id}",
                        scenes[0].caption, f"OK {scenes[0].id}", scenes[2].caption, f"OK {scenes[2].id}"]


def test_reconstruction_grid_keeps_at_most_num_pairs(tmp_path):
    scenes = sample_split("eval", 6)
    path = str(tmp_path / "r.png")
    save_reconstruction_grid(path, scenes, _solid(range(0, 60, 10)), _solid(range(5, 65, 10)), [True] * 6,
                             num_pairs=2, columns=4)
    with Image.open(path) as image:
        assert image.size[0] == 4 * (CELL + 4) + 4
    assert _cell_reds(path, 4) == [0, 5, 10, 15]


def test_loss_curves_are_written_from_the_records(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 1.0 / s, "l2": 0.5 / s, "quantization": 0.1} for s in
               range(1, 21)] + [{"kind": "eval", "step": 10, "exact_match": 0.25},
                                {"kind": "eval", "step": 20, "exact_match": 0.75}, {"kind": "end", "step": 20}]
    path = str(tmp_path / "curves.png")
    save_loss_curves(path, records)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (800, 450)
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels < 250).any() and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, "something is drawn"
    save_loss_curves(str(tmp_path / "train_only.png"), records[:20])
    assert (tmp_path / "train_only.png").stat().st_size > 0
