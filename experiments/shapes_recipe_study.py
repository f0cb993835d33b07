"""The Shapes recipe study: train a grid of decoder recipes for a fixed budget each and score
them on the `dev` split, so the demo's recipe is chosen on data that `eval` and `novel` never see.

    python experiments/shapes_recipe_study.py --run runs/demo --out runs/study \
        [--recipes baseline,patch_vq] [--seeds 0,1] [--steps 3000] [--score-every 500] [--size quick]

`--run` is a finished `cm3jax demo` directory: its Shapes world, text tokenizer, CLIP and
(for recipes that keep it) VQ-GAN and codes are reused. A recipe with its own number of
training scenes makes that world once (the run's seeds, so it holds the run's scenes and more),
pretokenizes it and retrieves its neighbours; a recipe that changes the image tokenizer trains
its own VQ-GAN once (shared by every recipe and seed that asks for the same one), pretokenizes
the world with it and, for retrieval, rebuilds the memory bank, its index and the neighbours.
Each decoder trains in segments of `--score-every` steps (resumed exactly); after each segment
`cm3jax eval` scores text -> image (dev prompts and the dev novel pairs, greedy; and the same
prompts' true images under teacher forcing, where the share of drawn codes ranked first moves
long before exact match) and captions on the dev split, and, for retrieval recipes, the unseen
emblems with and without retrieved documents. Everything lands in OUT:

    study.json   every scored point: recipe, seed, step, training tokens and seconds, figures
    study.md     the table (last point of each run, and the mean and spread over seeds)
    study.png    dev exact match against training tokens and against training seconds

Rerunning skips what is done. Wall seconds are the training steps' own time from each run's
metrics (compilation and scoring left out); they are only comparable between runs measured on
one machine with nothing else running, which the table states with the machine it ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cm3jax.benchmarking import cpu_name_and_isa  # noqa: E402
from cm3jax.config import load_config  # noqa: E402
from cm3jax.errors import UserError  # noqa: E402
from cm3jax.image_tokenizer.codebook import FACTOR_FEATURES  # noqa: E402
from cm3jax.eval.suite import run_suite  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Recipe:
    note: str
    decoder_variant: str = "default"  # experiments/shapes_tiny.py variant
    decoder: tuple[tuple[str, Any], ...] = ()  # config overrides: (dotted key, value)
    tokenizer: tuple[tuple[str, Any], ...] = ()  # tokenizers/vqgan_shapes.py:demo overrides; () = the run's
    scenes: int = 0  # training scenes of its own world (the run's world but for num_train); 0: the run's world
    memory: int = 0  # memory-bank documents of its own world (the run's world but for num_memory); 0: the run's
    selection: tuple[tuple[str, Any], ...] = ()  # overrides of the demo's neighbour SelectionOptions; (): the run's


# Image tokenizers, as complete overrides of tokenizers/vqgan_shapes.py:demo (a study row keeps
# its meaning when the demo's default changes).
CONV_8192 = (("model.encoder", "conv"), ("model.codebook_size", 8192), ("model.patch_width", 64))
PATCH_2048 = (("model.encoder", "patch"), ("model.codebook_size", 2048), ("model.patch_width", 64))
# The decoder recipe before this study, as overrides of experiments/shapes_tiny.py:retrieval.
NO_FACTORS = (("model.image_code_source", "codebook"), ("model.image_code_features", 0))
BEFORE = (("model.positions", "learned"), ("model.image_positions", 0), ("data.cm3_rate", 0.5),
          ("data.image_to_text", 0.5), ("data.throwaway_emblems", 0.0)) + NO_FACTORS
ROPE = (("model.positions", "rope"),)
MIX = (("data.cm3_rate", 0.1), ("data.image_to_text", 0.3))
IMAGE_POSITIONS = (("model.image_positions", 64),)
CODEBOOK_FEATURES = (("model.image_code_source", "codebook"), ("model.image_code_features", 16))
FACTORS = (("model.image_code_source", "factors"), ("model.image_code_features", FACTOR_FEATURES))
RECIPES = {
    "baseline": Recipe("the demo's recipe before this study: taming encoder with 8,192 codes, learned positions, "
                       "half the documents CM3-masked, half image-first", "retrieval", BEFORE, CONV_8192),
    "patch_vq": Recipe("baseline with the patch encoder (a code sees only its own patch), 2,048 codes", "retrieval",
                       BEFORE, PATCH_2048),
    "patch_vq_rope": Recipe("patch_vq with rotary positions", "retrieval", BEFORE + ROPE, PATCH_2048),
    "patch_vq_rope_mix": Recipe("patch_vq_rope with fewer CM3-masked (0.1) and image-first (0.3) documents",
                                "retrieval", BEFORE + ROPE + MIX, PATCH_2048),
    "image_positions": Recipe("patch_vq_rope_mix plus a learned embedding of each image token's place in its image",
                              "retrieval", BEFORE + ROPE + MIX + IMAGE_POSITIONS, PATCH_2048),
    "image_positions_wide": Recipe("image_positions at twice the width (d 256, 8 heads, MLP 1024)", "retrieval",
                                   BEFORE + ROPE + MIX + IMAGE_POSITIONS + (
                                       ("model.d_model", 256), ("model.n_heads", 8), ("model.mlp_hidden", 1024)),
                                   PATCH_2048),
    "no_factors": Recipe("the default until 2026-12-07: image codes without their Shapes factors", "retrieval",
                         NO_FACTORS),
    "codebook_features": Recipe("no_factors plus image tokens embedded and predicted also through their (frozen) "
                                "VQ-GAN codebook vectors, so codes that look alike share what is learned",
                                "retrieval", CODEBOOK_FEATURES),
    "codebook_features_lr_6e-3": Recipe("codebook_features at twice the peak learning rate (6e-3)", "retrieval",
                                        CODEBOOK_FEATURES + (("train.peak_lr", 6e-3),)),
    "pixel_features": Recipe("no_factors plus image tokens embedded and predicted also through what each code draws "
                             "(every pixel's RGB and squared length), so a logit scores each pixel's colour",
                             "retrieval", (("model.image_code_features", 64), ("model.image_code_source", "pixels"))),
    "code_factors": Recipe("no_factors plus image tokens embedded and predicted also through their Shapes factors (the "
                           "mask of the patch each code encodes, one-hot, and its colours), so a mask learnt in one "
                           "colour is known in every other (the default since 2026-12-07)", "retrieval", FACTORS),
    "code_factors_throwaway_0.3": Recipe("code_factors with three in ten examples throwaway emblems (not one), to "
                                         "keep the copying the factors cost", "retrieval",
                                         FACTORS + (("data.throwaway_emblems", 0.3),)),
    "code_factors_image_first_0.15": Recipe("code_factors with half the image-first documents (0.15, not 0.3), so "
                                            "more of each step is text -> image", "retrieval",
                                            FACTORS + (("data.image_to_text", 0.15),)),
    "code_factors_lr_6e-3": Recipe("code_factors at twice the peak learning rate (6e-3)", "retrieval",
                                   FACTORS + (("train.peak_lr", 6e-3),)),
    "code_factors_drawn_x4": Recipe("code_factors with four times the loss weight on the image codes that draw "
                                    "something (all but each image's most frequent code, its background)",
                                    "retrieval", FACTORS + (("data.drawn_code_weight", 4.0),)),
    "drawn_x4": Recipe("default with four times the loss weight on the image codes that draw something",
                       "retrieval", (("data.drawn_code_weight", 4.0),)),
    "lr_to_zero": Recipe("default with the learning rate decayed linearly to zero (not to a tenth of its peak)",
                         "retrieval", (("train.end_lr_fraction", 0.0),)),
    "batch_8": Recipe("default with half the batch (8 x 256 tokens a step)", "retrieval", (("train.batch_size", 8),)),
    "depth_6": Recipe("default with 6 layers instead of 4", "retrieval", (("model.n_layers", 6),)),
    "codebook_features_100k": Recipe("codebook_features on 100,000 training scenes (the run's world has 10,000)",
                                     "retrieval", CODEBOOK_FEATURES, scenes=100_000),
    "memory_2k": Recipe("default with the memory bank of 2,000 documents that was the demo's until 2026-12-04: two "
                        "thirds of each row are retrieved documents, trained on, and these repeat every ~60 steps",
                        "retrieval", memory=2_000),
    "memory_20k": Recipe("default with a memory bank of 20,000 documents (the demo's since 2026-12-04)", "retrieval",
                         memory=20_000),
    "code_factors_memory_20k": Recipe("code_factors with a memory bank of 20,000 documents", "retrieval",
                                      FACTORS, memory=20_000),
    "always_documents": Recipe("the default until 2026-12-04: every example after its documents, none trained "
                               "without (so a prompt with 0 documents, every caption prompt, was new to the model)",
                               "retrieval", (("data.no_documents", 0.0),)),
    "no_twins": Recipe("default, but no example is given a document of a scene that means what its own does (a third "
                       "of the training scenes had one among their neighbours; an evaluation prompt never has)",
                       "retrieval", selection=(("skip_same_meaning", True),)),
    "no_twins_always_documents": Recipe("no_twins, and every example after its documents", "retrieval",
                                        (("data.no_documents", 0.0),), selection=(("skip_same_meaning", True),)),
    "shared_objects": Recipe("default, but each training example's documents are bank scenes holding its own objects "
                             "exactly (shape, colour, size, centre, background: the same codes in the same places), "
                             "as few as cover the most of them, the retriever's neighbours filling the rest",
                             "retrieval", selection=(("share_objects", True),)),
    "throwaway_0.3": Recipe("default with three in ten examples throwaway emblems (not one)", "retrieval",
                            (("data.throwaway_emblems", 0.3),)),
    "default": Recipe("the demo's recipe now (experiments/shapes_tiny.py:retrieval, tokenizers/vqgan_shapes.py:demo)",
                      "retrieval"),
}


def _override(key: str, value: Any) -> str:
    return f"--config.{key}={value}"


def _dirs(run: str, out: str, recipe: Recipe) -> dict[str, Any]:
    """Where a recipe's world, tokenizer, codes, memory bank, index and neighbours live: the run's,
    or, for what a recipe changes, its own under OUT (shared by every recipe asking the same). The
    neighbours are chosen by the demo's SELECTION with the recipe's changes; neighbours found chosen
    otherwise (an older run's) give way to the recipe's own."""
    dirs: dict[str, Any] = {k: os.path.join(run, k) for k in
                            ("shapes", "vqgan", "codes", "bank", "index", "neighbours")}
    if recipe.scenes or recipe.memory:
        world = {k: v for k, v in (("num_train", recipe.scenes), ("num_memory", recipe.memory)) if v}
        name = "-".join(f"{v}" if k == "num_train" else f"{k}={v}" for k, v in world.items())
        base = os.path.join(out, "worlds", name)
        dirs.update(shapes=os.path.join(base, "shapes"), codes=os.path.join(base, "codes"),
                    neighbours=os.path.join(base, "neighbours"), world=world)
        if recipe.memory:
            dirs.update(bank=os.path.join(base, "bank"), index=os.path.join(base, "index"))
    if recipe.tokenizer:
        said = [recipe.tokenizer, dirs["world"]] if "world" in dirs else recipe.tokenizer
        key = hashlib.sha256(json.dumps(said).encode()).hexdigest()[:10]
        base = os.path.join(out, "tokenizers", key)
        dirs.update({k: os.path.join(base, k) for k in ("vqgan", "codes", "bank", "index", "neighbours")},
                    overrides=recipe.tokenizer)
    from cm3jax.demo import SELECTION
    dirs["selection"] = dataclasses.replace(SELECTION, **dict(recipe.selection))
    if _chosen_by(dirs["neighbours"]) not in (None, dataclasses.asdict(dirs["selection"])):  # chosen otherwise
        said = [dataclasses.asdict(dirs["selection"]), dirs["bank"], dirs["shapes"]]
        key = hashlib.sha256(json.dumps(said).encode()).hexdigest()[:10]
        dirs["neighbours"] = os.path.join(out, "neighbours", key)
    return dirs


def _chosen_by(neighbours: str) -> dict | None:
    """The selection options a neighbours directory's training rows were chosen by; None if it has none."""
    from cm3jax.retrieval.neighbours import MANIFEST
    if not MANIFEST.exists(neighbours):
        return None
    return MANIFEST.read(neighbours)["splits"].get("train", {}).get("options")


def prepare(run: str, dirs: dict[str, Any]) -> dict[str, Any]:
    """Makes what a recipe changes (its world; its VQ-GAN, the codes, and for retrieval the memory
    bank, index and neighbours) and returns the tokenizer's own figures (reconstruction exact
    match, bits of a code beyond its patch)."""
    from cm3jax.demo import _neighbours_done
    from cm3jax.image_tokenizer.checkpoints import latest_step, load_tokenizer
    from cm3jax.image_tokenizer.pretokenize import MANIFEST as CODES_MANIFEST
    from cm3jax.image_tokenizer.pretokenize import pretokenize
    from cm3jax.image_tokenizer.train import train as train_image_tokenizer
    from cm3jax.retrieval.bank import MANIFEST as BANK_MANIFEST
    from cm3jax.retrieval.index import MANIFEST as INDEX_MANIFEST
    from cm3jax.retrieval.shapes_memory import SPLITS, make_bank, make_index, make_neighbours
    from cm3jax.shapes.dataset import MANIFEST as SHAPES_MANIFEST
    from cm3jax.shapes.dataset import load_spec, make

    if "world" in dirs and not SHAPES_MANIFEST.exists(dirs["shapes"]):
        make(dirs["shapes"], dataclasses.replace(load_spec(os.path.join(run, "shapes")), **dirs["world"]))
    if "overrides" in dirs:
        config = load_config(f"{ROOT}/tokenizers/vqgan_shapes.py:demo",
                             [_override(k, v) for k, v in dirs["overrides"]])
        if latest_step(dirs["vqgan"]) != config.training.steps:
            train_image_tokenizer(config, dirs["vqgan"])
    if not CODES_MANIFEST.exists(dirs["codes"]):
        pretokenize(dirs["shapes"], dirs["codes"], load_tokenizer(dirs["vqgan"])[0])
    text, clip = os.path.join(run, "text.model"), os.path.join(run, "clip")
    if not BANK_MANIFEST.exists(dirs["bank"]):
        make_bank(clip, dirs["shapes"], dirs["codes"], text, dirs["vqgan"], dirs["bank"])
    if not INDEX_MANIFEST.exists(dirs["index"]):
        make_index(dirs["bank"], dirs["index"])
    if not _neighbours_done(dirs["neighbours"]):
        make_neighbours(dirs["index"], dirs["shapes"], SPLITS, dirs["neighbours"], dirs["selection"])
    return tokenizer_figures(dirs)


def tokenizer_figures(dirs: dict[str, Any]) -> dict[str, Any]:
    """Reconstruction exact match (the tokenizer's own eval) and H(code | patch) on train images."""
    import numpy as np

    from cm3jax.image_tokenizer.checkpoints import load_tokenizer
    from cm3jax.image_tokenizer.codebook import code_bits_given_patch
    from cm3jax.image_tokenizer.pretokenize import read_codes
    from cm3jax.shapes.dataset import data_source

    end = None
    with open(os.path.join(dirs["vqgan"], "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "end":
                end = record
    codes, scenes = read_codes(dirs["codes"], "train", None), data_source(dirs["shapes"], "train")
    n = min(2000, len(codes))
    codes_N = np.stack([np.asarray(codes[i]["codes"]) for i in range(n)])
    images = np.stack([np.asarray(scenes[i]["image"]) for i in range(n)])
    side = int(round(codes_N[0].size ** 0.5))
    return {"reconstruction_exact": end["eval/exact_match"] if end else None,
            "codebook_size": load_tokenizer(dirs["vqgan"])[0].config.codebook_size,
            "code_bits_given_patch": code_bits_given_patch(images, codes_N.reshape(n, side, side))}


def decoder_config(run: str, dirs: dict[str, Any], recipe: Recipe, seed: int, steps: int):
    retrieval = recipe.decoder_variant.endswith("retrieval")
    paths = [_override("data.shapes_dir", dirs["shapes"]), _override("data.codes_dir", dirs["codes"]),
             _override("data.text_tokenizer", os.path.join(run, "text.model")),
             _override("data.image_tokenizer", dirs["vqgan"])]
    if retrieval:
        paths += [_override("data.retrieval_bank", dirs["bank"]), _override("data.neighbours", dirs["neighbours"])]
    return load_config(f"{ROOT}/experiments/shapes_tiny.py:{recipe.decoder_variant}",
                       paths + [_override("train.seed", seed), _override("train.steps", steps)]
                       + [_override(k, v) for k, v in recipe.decoder])


def training_cost(workdir: str, step: int) -> tuple[float, float, float]:
    """(tokens, seconds, mean training loss of the last 50 steps) of a run's first `step` steps,
    from its metrics.jsonl."""
    tokens = seconds = 0.0
    losses = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "train" and record["step"] <= step:
                tokens += record["tokens"]
                seconds += 1.0 / record["steps_per_second"]
                losses = (losses + [record["loss"]])[-50:]
    return tokens, seconds, sum(losses) / max(len(losses), 1)


def _rate(entry: dict, *path: str) -> float | None:
    for key in path:
        if entry is None:
            return None
        entry = entry.get(key)
    return entry["rate"] if isinstance(entry, dict) and "rate" in entry else entry


def figures(results: dict) -> dict[str, float | None]:
    tasks = results["tasks"]
    t2i = tasks.get("text_to_image", {}).get("results", {})
    row = {"dev_exact": _rate(t2i, "dev", "exact_match") if "dev" in t2i else _rate(t2i, "eval", "exact_match"),
           "novel_exact": _rate(t2i, "novel", "exact_match")}
    main = t2i.get("dev") or t2i.get("eval") or {}
    row.update({k: main.get(k) for k in ("color", "shape", "size", "position", "count")})
    row["caption_exact"] = _rate(tasks.get("caption", {}).get("results"), "exact_match")
    likelihood = tasks.get("likelihood", {}).get("results", {})
    for name, key in (("dev", "dev"), ("eval", "dev"), ("novel", "novel")):
        if name in likelihood:
            row[f"{key}_drawn_accuracy"] = likelihood[name]["drawn_token_accuracy"]
            row[f"{key}_continued_accuracy"] = likelihood[name]["continued_token_accuracy"]
            if "with_2_retrieved" in likelihood[name]:
                row[f"{key}_drawn_accuracy_2"] = likelihood[name]["with_2_retrieved"]["drawn_token_accuracy"]
    retrieval = (tasks.get("retrieval", {}).get("results") or {})
    by_documents = (retrieval.get("dev") or retrieval.get("eval") or {}).get("by_retrieved", {})
    for documents in ("1", "2"):
        if documents in by_documents:
            row[f"dev_exact_{documents}"] = _rate(by_documents[documents], "exact_match")
    emblems = (tasks.get("emblems", {}).get("results") or {}).get("by_retrieved", {})
    for documents, entry in emblems.items():
        row[f"emblems_{documents}"] = entry["emblem_pixel_accuracy"]
    return row


def run_one(run: str, out: str, name: str, recipe: Recipe, seed: int, steps: int, every: int,
            done: dict, size: str = "quick") -> list[dict]:
    dirs = _dirs(run, out, recipe)
    tokenizer = prepare(run, dirs)
    from cm3jax.train.loop import train
    config = decoder_config(run, dirs, recipe, seed, steps)
    workdir = os.path.join(out, "runs", f"{name}-seed{seed}")
    rows = []
    tasks = ["text_to_image", "likelihood", "caption"] + (["emblems"] if recipe.decoder_variant.endswith("retrieval") else [])
    for step in range(every, steps + 1, every):
        key = f"{name}/{seed}/{step}"
        if key in done:
            rows.append(done[key])
            continue
        train(config, workdir, stop_at_step=step if step < steps else None)
        # text -> image after 1 and 2 retrieved documents, at the end only (six more passes of the prompts)
        last = ["retrieval"] if step == steps and "emblems" in tasks else []
        results = run_suite(workdir, size, tasks=tasks + last, split="dev", out=os.path.join(workdir, "eval", f"step{step}"),
                            index=dirs["index"], progress=False)
        tokens, seconds, loss = training_cost(workdir, step)
        row = {"recipe": name, "seed": seed, "step": step, "tokens": tokens, "seconds": seconds, "train_loss": loss,
               "tokenizer": tokenizer, **figures(results)}
        done[key] = row
        rows.append(row)
        print(f"[study] {key}: dev exact {row['dev_exact']}, novel {row['novel_exact']}, "
              f"caption {row['caption_exact']}, {tokens / 1e6:.1f}M tokens, {seconds:.0f} s", flush=True)
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if isinstance(value, float) and value <= 1.0 else f"{value:.3g}"


def write_table(out: str, rows: list[dict], recipes: dict[str, Recipe], machine: str) -> str:
    import numpy as np
    last = {}
    for row in rows:
        k = (row["recipe"], row["seed"])
        if k not in last or row["step"] > last[k]["step"]:
            last[k] = row
    columns = ("dev_exact", "novel_exact", "color", "shape", "size", "position", "count", "dev_drawn_accuracy",
               "dev_continued_accuracy", "novel_drawn_accuracy", "dev_drawn_accuracy_2", "dev_exact_1", "dev_exact_2",
               "caption_exact")
    lines = [f"Machine: {machine}. Dev split, {len(rows)} scored points; figures in % (128 dev prompts, "
             f"128 dev novel-pair prompts, greedy).", "",
             "| recipe | seed | steps | tokens (M) | train s | train loss | VQ recon exact | code bits/patch | "
             + " | ".join(columns) + " |", "|" + "---|" * (8 + len(columns))]
    for (name, seed), row in sorted(last.items()):
        t = row["tokenizer"]
        lines.append(f"| {name} | {seed} | {row['step']} | {row['tokens'] / 1e6:.1f} | {row['seconds']:.0f} | "
                     f"{row['train_loss']:.3f} | "
                     f"{_cell(t['reconstruction_exact'])} | {t['code_bits_given_patch']:.2f} | "
                     + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    by_recipe: dict[str, list[dict]] = {}
    for (name, _), row in last.items():
        by_recipe.setdefault(name, []).append(row)
    spreads = []
    for name, group in sorted(by_recipe.items()):
        for key in ("dev_exact", "dev_drawn_accuracy", "dev_continued_accuracy"):
            values = [r[key] for r in group if r.get(key) is not None]
            if len(values) > 1:
                spreads.append(f"- {name}: {key} {100 * np.mean(values):.1f}% over seeds "
                               f"{sorted(r['seed'] for r in group)}, spread {100 * (max(values) - min(values)):.1f} points")
    if spreads:
        lines += ["", "Over seeds (mean, and the spread max - min):", ""] + spreads
    lines += ["", "Recipes:", ""] + [f"- `{n}`: {r.note}" for n, r in recipes.items() if n in by_recipe]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(text)
    return text


def _attributes(row: dict) -> float:
    """The mean of the colour, shape, size and position accuracies: it moves long before exact match."""
    values = [row.get(k) for k in ("color", "shape", "size", "position")]
    return 100 * sum(v or 0.0 for v in values) / len(values)


MEASURES = (  # (y label, the figure of a row in %, or None where the row lacks it)
    ("dev text -> image exact match (%)", lambda r: 100 * (r["dev_exact"] or 0.0)),
    ("mean of colour, shape, size, position (%)", _attributes),
    ("dev drawn codes ranked first,\nteacher forcing (%)",
     lambda r: None if r.get("dev_drawn_accuracy") is None else 100 * r["dev_drawn_accuracy"]),
)


def plot(out: str, rows: list[dict]) -> str:
    fig, axes = plt.subplots(len(MEASURES), 2, figsize=(11, 10), sharey="row", sharex="col")
    runs: dict[tuple, list[dict]] = {}
    for row in rows:
        runs.setdefault((row["recipe"], row["seed"]), []).append(row)
    for i, ((name, seed), points) in enumerate(sorted(runs.items())):
        points.sort(key=lambda r: r["step"])
        style = dict(marker="o", label=f"{name} (seed {seed})", color=f"C{i % 10}", linestyle="-" if i < 10 else "--")
        for line, (_, measure) in enumerate(MEASURES):
            shown = [(r, measure(r)) for r in points if measure(r) is not None]
            if not shown:
                continue
            for column, x in enumerate((lambda r: r["tokens"] / 1e6, lambda r: r["seconds"] / 60)):
                axes[line, column].plot([x(r) for r, _ in shown], [y for _, y in shown], **style)
    axes[-1, 0].set_xlabel("training tokens (millions)")
    axes[-1, 1].set_xlabel("training minutes (this machine)")
    for line, (name, _) in enumerate(MEASURES):
        axes[line, 0].set_ylabel(name)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 100)
    axes[0, 1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = os.path.join(out, "study.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a finished `cm3jax demo` directory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--score-every", type=int, default=500)
    parser.add_argument("--size", default="quick", help="the evaluation suite's size (smoke: a check that it runs)")
    args = parser.parse_args(argv)
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"Unknown recipe(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}.")
    if args.steps % args.score_every:
        raise SystemExit(f"--steps {args.steps} is not a multiple of --score-every {args.score_every}.")
    if not os.path.isdir(os.path.join(args.run, "shapes")):
        raise SystemExit(f"{args.run} is not a finished `cm3jax demo` directory (no shapes/ in it); run "
                         f"`cm3jax demo --workdir {args.run}` first.")
    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, "study.json")
    done = {}
    if os.path.exists(store):
        with open(store) as f:
            done = {f"{r['recipe']}/{r['seed']}/{r['step']}": r for r in json.load(f)["rows"]}
    cpu, isa = cpu_name_and_isa()
    machine = f"{cpu}, {isa}, {os.cpu_count()} cores"
    rows = []
    try:
        for name in names:
            for seed in (int(s) for s in args.seeds.split(",")):
                rows += run_one(args.run, args.out, name, RECIPES[name], seed, args.steps, args.score_every, done,
                                args.size)
                with open(store, "w") as f:
                    json.dump({"machine": machine, "rows": list(done.values())}, f, indent=1)
    except UserError as e:
        raise SystemExit(f"cm3jax: error: {e}")
    print(write_table(args.out, list(done.values()), RECIPES, machine))
    print(f"[study] plot: {plot(args.out, list(done.values()))}")


if __name__ == "__main__":
    main()
