"""Pictures of a tokenizer run: originals beside their reconstructions, and the loss curves."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from cm3jax.fileio import atomic_write_bytes  # noqa: E402
from cm3jax.shapes.preview import captioned_grid, save_png  # noqa: E402


def save_reconstruction_grid(path: str, scenes, originals_NRR3: np.ndarray, reconstructions_NRR3: np.ndarray,
                             exact_N, num_pairs: int = 16, columns: int = 8) -> None:
    """Pairs (original, reconstruction), misses first; reconstructions are captioned OK/MISS."""
    exact_N = np.asarray(exact_N, bool)
    order = np.concatenate([np.flatnonzero(~exact_N), np.flatnonzero(exact_N)])[:num_pairs]
    images, captions = [], []
    for i in order:
        images += [originals_NRR3[i], reconstructions_NRR3[i]]
        captions += [scenes[i].caption, ("OK " if exact_N[i] else "MISS ") + scenes[i].id]
    save_png(captioned_grid(np.stack(images), captions, columns), path)


def save_loss_curves(path: str, records: list[dict]) -> None:
    """Training losses against step (log scale) and, on a second axis, eval exact match."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    figure, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key in ("loss", "l1", "l2", "quantization"):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            ax.plot(*zip(*points), label=key, linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if evals:
        twin = ax.twinx()
        twin.plot([r["step"] for r in evals], [r["exact_match"] for r in evals], "o-", color="black",
                  label="eval exact match")
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("eval exact match")
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="center right", fontsize=8)
    save_figure(figure, path)


def save_figure(figure, path: str) -> None:
    """A matplotlib figure as a PNG at `path` (written atomically), then closed."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
