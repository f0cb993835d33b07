"""The main job on the embedded default: every stage on the Shapes world, each skipped when it
finished with the settings and inputs it has now (so an interrupted demo resumes, and a changed
stage reruns with the stages after it).

    cm3jax demo --workdir runs/demo [--profile quick]

1. make the Shapes datasets; 2. train the text tokenizer; 3. train the VQ-GAN image
tokenizer; 4. pretokenize every image; 5. train the retriever's CLIP; 6. embed the memory
split into a memory bank; 7. index it; 8. retrieve every example's neighbours (training
examples never see the unseen emblems); 9. train the retrieval-augmented decoder (text ->
image and image -> text); 10. score it with the evaluation suite (`cm3jax eval`, quick size):
text -> image with 0, 1 and 2 retrieved documents, the unseen emblems (only a copy from a
retrieved document can draw them), the guidance and decoding sweeps, captions and infilling;
11. instruction-tune the decoder on the task templates (`cm3jax finetune`,
experiments/shapes_sft.py); 12. score the tuned decoder on every task it was tuned for (short and
long captions, VQA, editing, grounding, structure -> image) and on text -> image and the emblems.
WORKDIR/report.html shows the scores and every picture; WORKDIR/eval/report.html and
WORKDIR/sft_eval/report.html the suite's.

Profiles: `default`, the run the results are reported from; `quick`, every stage at toy size (a
check of the whole pipeline in a few minutes). Before any work the run directory is checked:
writable, enough free disk for the profile, made (if it exists) by this cm3jax version and
profile (WORKDIR/demo.json), and not in use by another run (a lock).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable

from cm3jax import __version__
from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.eval.report import summary
from cm3jax.eval.suite import RESULTS_JSON as EVAL_RESULTS
from cm3jax.eval.suite import run_suite
from cm3jax.fileio import atomic_write_text
from cm3jax.image_tokenizer.checkpoints import latest_step, load_tokenizer
from cm3jax.image_tokenizer.pretokenize import MANIFEST as CODES_MANIFEST
from cm3jax.image_tokenizer.pretokenize import pretokenize
from cm3jax.image_tokenizer.train import train as train_image_tokenizer
from cm3jax.recipes import packaged_recipe
from cm3jax.report import write_report
from cm3jax.retrieval.clip_train import EVAL_JSON
from cm3jax.retrieval.clip_train import train as train_clip
from cm3jax.retrieval.bank import MANIFEST as BANK_MANIFEST
from cm3jax.retrieval.bank import ShapesBankOptions
from cm3jax.retrieval.index import MANIFEST as INDEX_MANIFEST
from cm3jax.retrieval.neighbours import MANIFEST as NEIGHBOURS_MANIFEST
from cm3jax.retrieval.select import SelectionOptions
from cm3jax.retrieval.shapes_memory import SPLITS, make_bank, make_index, make_neighbours
from cm3jax.shapes.corpus import shapes_corpus
from cm3jax.shapes.dataset import MANIFEST as SHAPES_MANIFEST
from cm3jax.shapes.dataset import WorldSpec, make
from cm3jax.text_tokenizer import train_text_tokenizer
from cm3jax.train.finetune import finetune_config
from cm3jax.train.loop import RESULTS_JSON, train
from cm3jax.workdir_lock import lock_path, workdir_lock

PROFILES = {  # demo profile -> (world, VQ-GAN, CLIP, decoder, tuning) config variants and the suite's size
    "default": ("default", "demo", "default", "retrieval", "default", "quick"),
    "quick": ("tiny", "tiny", "tiny", "test_retrieval", "test", "smoke"),
}
# What the tuned decoder is scored on: its tasks, and what pretraining taught that tuning may cost.
TUNED_TASKS = ["text_to_image", "emblems", "caption", "caption_short", "caption_long", "vqa", "edit", "grounding",
               "structure", "infill"]
# Disk a finished run takes, with room to spare (measured: default 63 MB before the decoder, about
# 130 MB in all; quick under 20 MB).
DISK_NEEDED = {"default": 400 << 20, "quick": 100 << 20}
# Each stage's seconds in a measured run of each profile, quiet machines: the default's on a 2-core
# Intel Xeon (AVX-512), the run the README reports (its two instruction-tuning stages: measured on a
# 2-core AMD EPYC, AVX-512, 530 s and 33 s, scaled by the decoder stage's Xeon / EPYC ratio, 1.31);
# quick's on a 2-core AMD EPYC (AVX2), 2026-12-02 (its tuning stages: 6 s and 7 s on the AVX-512 EPYC, times 3,
# that machine's ratio on the decoder and evaluation stages).
# The time left is estimated from them, scaled by how this machine compares on the stages it has run.
REFERENCE_SECONDS = {
    "default": dict(shapes=8, text_tokenizer=4, image_tokenizer=504, pretokenize=24, clip=294, bank=6, index=2,
                    neighbours=4, decoder=1896, evaluation=258, instruction_tuning=694, tuned_evaluation=43),
    "quick": dict(shapes=0.3, text_tokenizer=0.1, image_tokenizer=33, pretokenize=4.4, clip=15, bank=1.9, index=0.0,
                  neighbours=0.7, decoder=24, evaluation=66, instruction_tuning=18, tuned_evaluation=21),
}
RUN_RECORD = "demo.json"
TEXT_VOCAB = 512
STAGE_DIRS = dict(shapes="shapes", text="text.model", vqgan="vqgan", codes="codes", clip="clip", bank="bank",
                  index="index", neighbours="neighbours", decoder="decoder", eval="eval", sft="sft",
                  sft_eval="sft_eval")
OTHER_FILES = {RUN_RECORD, "report.html", os.path.basename(lock_path(""))}
# CM3Leon skips documents scoring above 0.9 against the query as near copies of it. This CLIP
# scores a caption against its own picture at ~0.97, so 0.9 would skip every document showing
# what a caption asks for (an emblem's, above all); the query's own document is excluded by id.
# Skipping scenes that mean what the query's does (`skip_same_meaning`) did not help on dev
# (docs/recipe.md, section 16).
SELECTION = SelectionOptions(k=2, candidates=32, max_relevance=None)


@dataclasses.dataclass(frozen=True)
class Stage:
    key: str
    label: str
    settings: Any  # what its output depends on beyond the stages before it (JSON-able)
    output: str  # removed before the stage runs again
    done: Callable[[], bool]
    run: Callable[[], Any]


def _fingerprint(before: str, stage: Stage, workdir: str) -> str:
    """A stage's hash: its settings (paths inside the run written relative to it, so a moved run
    keeps its hashes) chained to the hash of the stage before it."""
    said = json.dumps([before, stage.key, stage.settings], sort_keys=True, default=str)
    said = said.replace(json.dumps(os.path.abspath(workdir))[1:-1], "<run>").replace(json.dumps(workdir)[1:-1],
                                                                                      "<run>")
    return hashlib.sha256(said.encode()).hexdigest()[:16]


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def time_left(reference: dict[str, float], measured: dict[str, float], remaining: list[str]) -> float:
    """Seconds the `remaining` stages should take here: their reference seconds, times the ratio of
    this machine's seconds to the reference's over the stages it has run. A tenth of the whole
    reference counts as run at the reference's pace, so a few short stages do not swing it."""
    ran = [key for key, seconds in measured.items() if seconds > 0 and key in reference]
    prior = 0.1 * sum(reference.values())
    pace = (prior + sum(measured[k] for k in ran)) / (prior + sum(reference[k] for k in ran))
    return pace * sum(reference[key] for key in remaining)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def run_stages(workdir: str, stages: list[Stage], reference: dict[str, float]) -> dict[str, float]:
    """Runs each stage unless it is done with the settings and inputs it has now; one whose hash
    changed runs again from scratch, and once one stage runs every stage after it runs too (its
    inputs are new). An interrupted stage resumes. Each stage that runs is announced with the time
    the demo has left, estimated from `reference` (each stage's seconds in a measured run). Returns
    each stage's seconds (0: skipped)."""
    record_path = os.path.join(workdir, RUN_RECORD)
    record = _read(record_path) or {}
    hashes = record.setdefault("stages", {})
    timings, before, ran = {}, "", False
    for position, stage in enumerate(stages):
        before = _fingerprint(before, stage, workdir)
        saved = hashes.get(stage.key)
        changed = saved is not None and saved["hash"] != before
        if not (ran or changed) and stage.done() and (saved is None or saved["done"]):
            print(f"[demo] {stage.label}: already done")
            hashes[stage.key] = {"hash": before, "done": True}
            timings[stage.key] = 0.0
            continue
        if changed or ran:  # never resume from, or keep, output made from other inputs
            if os.path.exists(stage.output):
                why = "its settings or an earlier stage's changed" if changed else "an earlier stage ran again"
                print(f"[demo] {stage.label}: {why}; running it again")
            _remove(stage.output)
        hashes[stage.key] = {"hash": before, "done": False}
        atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
        left = time_left(reference, timings, [s.key for s in stages[position:]])
        print(f"[demo] {stage.label} (stage {position + 1} of {len(stages)}; about {_duration(left)} left in all) ...")
        start = time.perf_counter()
        stage.run()
        timings[stage.key] = time.perf_counter() - start
        print(f"[demo] {stage.label}: {timings[stage.key]:.0f} s")
        hashes[stage.key]["done"], ran = True, True
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return timings


def _neighbours_done(directory: str) -> bool:
    return NEIGHBOURS_MANIFEST.exists(directory) and set(SPLITS) <= set(NEIGHBOURS_MANIFEST.read(directory)["splits"])


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _trained(workdir: str) -> bool:
    """The training run in `workdir` finished (it writes its results last)."""
    return _read(os.path.join(workdir, RESULTS_JSON)) is not None


def _evaluated(eval_dir: str, decoder_dir: str) -> bool:
    """The suite scored every task of the finished decoder's checkpoint without an error."""
    results, trained = _read(os.path.join(eval_dir, EVAL_RESULTS)), _read(os.path.join(decoder_dir, RESULTS_JSON))
    return bool(results and trained and results["checkpoint"]["step"] == trained["step"]
                and all(e["status"] != "error" for e in results["tasks"].values()))


def run_demo(workdir: str, profile: str = "default") -> dict:
    if profile not in PROFILES:
        raise UserError(f"Unknown demo profile {profile!r}; choose one of {', '.join(PROFILES)}.")
    check_workdir(workdir, profile)
    with workdir_lock(workdir, f"cm3jax demo --workdir {workdir} --profile {profile}"):
        _claim(workdir, profile)
        return _run_stages(workdir, profile)


def check_workdir(workdir: str, profile: str) -> None:
    """Refuses, before any work, a run directory this run cannot use, naming the fix."""
    existing = workdir
    while not os.path.exists(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise UserError(f"{existing} is a file; give --workdir a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{existing} is not writable by this user; give --workdir a directory you can write.")
    record = _read(os.path.join(workdir, RUN_RECORD))
    if record is not None and (record.get("profile"), record.get("cm3jax")) != (profile, __version__):
        raise UserError(f"{workdir} holds a demo run of profile {record.get('profile')!r} made by cm3jax "
                        f"{record.get('cm3jax')}, not profile {profile!r} of cm3jax {__version__}; use another "
                        f"--workdir, or delete {workdir} to start over.")
    strangers = set(os.listdir(workdir)) - set(STAGE_DIRS.values()) - OTHER_FILES if os.path.isdir(workdir) else ()
    if record is None and strangers:
        raise UserError(f"{workdir} holds other things than a demo run ({', '.join(sorted(strangers)[:3])}); "
                        f"use another --workdir.")
    free, needed = shutil.disk_usage(existing).free, DISK_NEEDED[profile] - _size(workdir)
    if free < needed:
        raise UserError(f"The {profile} demo needs about {needed / 2 ** 20:.0f} MB more disk but {existing} has "
                        f"{free / 2 ** 20:.0f} MB free; free some space or use a --workdir on another disk.")


def _size(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(directory) for name in names)


def _claim(workdir: str, profile: str) -> None:
    path = os.path.join(workdir, RUN_RECORD)
    if not os.path.exists(path):
        atomic_write_text(path, json.dumps({"profile": profile, "cm3jax": __version__}) + "\n")


def demo_configs(workdir: str, profile: str) -> dict:
    """The configs of the demo's stages for a run in `workdir` (world, vqgan, clip, decoder, tuning),
    from the shipped recipes, and the evaluation suite's size."""
    world_variant, vq_variant, clip_variant, decoder_variant, tuning_variant, suite_size = PROFILES[profile]
    paths = _paths(workdir)

    def recipe(name: str, variant: str, overrides=()):
        return load_config(f"{packaged_recipe(name)}:{variant}", overrides)

    return {
        "world": recipe("experiments/shapes_world.py", world_variant).world,
        "vqgan": recipe("tokenizers/vqgan_shapes.py", vq_variant),
        "clip": recipe("retrieval/clip_shapes.py", clip_variant, [f"--config.data.shapes_dir={paths['shapes']}",
                                                                   f"--config.data.text_tokenizer={paths['text']}"]),
        "decoder": recipe("experiments/shapes_tiny.py", decoder_variant, [
            f"--config.data.shapes_dir={paths['shapes']}", f"--config.data.codes_dir={paths['codes']}",
            f"--config.data.text_tokenizer={paths['text']}", f"--config.data.image_tokenizer={paths['vqgan']}",
            f"--config.data.retrieval_bank={paths['bank']}", f"--config.data.neighbours={paths['neighbours']}"]),
        "tuning": recipe("experiments/shapes_sft.py", tuning_variant),
        "suite_size": suite_size,
    }


def _paths(workdir: str) -> dict[str, str]:
    return {k: os.path.join(workdir, v) for k, v in STAGE_DIRS.items()}


def _run_stages(workdir: str, profile: str) -> dict:
    paths = _paths(workdir)
    configs = demo_configs(workdir, profile)
    world, vq_config, clip_config, decoder_config, tuning, suite_size = (
        configs[k] for k in ("world", "vqgan", "clip", "decoder", "tuning", "suite_size"))

    stages = [
        Stage("shapes", "make the Shapes world", world.to_dict(), paths["shapes"],
              lambda: SHAPES_MANIFEST.exists(paths["shapes"]), lambda: make(paths["shapes"], WorldSpec(**world))),
        Stage("text_tokenizer", "train the text tokenizer", {"vocab_size": TEXT_VOCAB}, paths["text"],
              lambda: os.path.exists(paths["text"]),
              lambda: train_text_tokenizer(shapes_corpus(world.num_train), TEXT_VOCAB).save(paths["text"])),
        Stage("image_tokenizer", "train the VQ-GAN", vq_config.to_dict(), paths["vqgan"],
              lambda: latest_step(paths["vqgan"]) == vq_config.training.steps,
              lambda: train_image_tokenizer(vq_config, paths["vqgan"])),
        Stage("pretokenize", "pretokenize every image", {}, paths["codes"],
              lambda: CODES_MANIFEST.exists(paths["codes"]),
              lambda: pretokenize(paths["shapes"], paths["codes"], load_tokenizer(paths["vqgan"])[0])),
        Stage("clip", "train the retriever's CLIP", clip_config.to_dict(), paths["clip"],
              lambda: os.path.exists(os.path.join(paths["clip"], EVAL_JSON)),
              lambda: train_clip(clip_config, paths["clip"])),
        Stage("bank", "embed the memory bank", dataclasses.asdict(ShapesBankOptions()), paths["bank"],
              lambda: BANK_MANIFEST.exists(paths["bank"]),
              lambda: make_bank(paths["clip"], paths["shapes"], paths["codes"], paths["text"], paths["vqgan"],
                                paths["bank"])),
        Stage("index", "index the memory bank", {}, paths["index"], lambda: INDEX_MANIFEST.exists(paths["index"]),
              lambda: make_index(paths["bank"], paths["index"])),
        Stage("neighbours", "retrieve every example's neighbours", dataclasses.asdict(SELECTION), paths["neighbours"],
              lambda: _neighbours_done(paths["neighbours"]),
              lambda: make_neighbours(paths["index"], paths["shapes"], SPLITS, paths["neighbours"], SELECTION)),
        Stage("decoder", "train the decoder", decoder_config.to_dict(), paths["decoder"],
              lambda: _trained(paths["decoder"]),
              lambda: train(decoder_config, paths["decoder"])),
        Stage("evaluation", f"score the decoder on the evaluation suite ({suite_size})", suite_size, paths["eval"],
              lambda: _evaluated(paths["eval"], paths["decoder"]),
              lambda: run_suite(paths["decoder"], suite_size, out=paths["eval"])),
        Stage("instruction_tuning", "instruction-tune the decoder", tuning.to_dict(), paths["sft"],
              lambda: _trained(paths["sft"]),
              lambda: train(finetune_config(tuning, paths["decoder"]), paths["sft"])),
        Stage("tuned_evaluation", f"score the tuned decoder on every task ({suite_size})",
              {"size": suite_size, "tasks": TUNED_TASKS}, paths["sft_eval"],
              lambda: _evaluated(paths["sft_eval"], paths["sft"]),
              lambda: run_suite(paths["sft"], suite_size, TUNED_TASKS, out=paths["sft_eval"])),
    ]
    timings = run_stages(workdir, stages, REFERENCE_SECONDS[profile])
    results = {"decoder": _read(os.path.join(paths["decoder"], RESULTS_JSON)),
               "retriever": _read(os.path.join(paths["clip"], EVAL_JSON)),
               "evaluation": _read(os.path.join(paths["eval"], EVAL_RESULTS)),
               "tuning": _read(os.path.join(paths["sft"], RESULTS_JSON)),
               "tuned_evaluation": _read(os.path.join(paths["sft_eval"], EVAL_RESULTS)), "stage_seconds": timings}
    print(summary(results["evaluation"]))
    print("[demo] the instruction-tuned decoder:")
    print(summary(results["tuned_evaluation"]))
    print(f"[demo] report: {write_report(workdir, results)}")
    return results
