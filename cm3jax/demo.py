"""The main job on the embedded default: every stage on the Shapes world, each skipped when
its output is already there (so an interrupted demo resumes).

    cm3jax demo --workdir runs/demo

1. make the Shapes datasets; 2. train the text tokenizer; 3. train the VQ-GAN image
tokenizer; 4. pretokenize every image; 5. train the decoder (text -> image and image ->
text) and score its greedy text -> image samples with the Shapes detector.
"""

from __future__ import annotations

import json
import os
import time

from cm3jax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stage(name: str, done: bool, run) -> float:
    if done:
        print(f"[demo] {name}: already done")
        return 0.0
    print(f"[demo] {name} ...")
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"[demo] {name}: {seconds:.0f} s")
    return seconds


def run_demo(workdir: str, variant: str = "default") -> dict:
    from cm3jax.image_tokenizer.checkpoints import latest_step, load_tokenizer
    from cm3jax.image_tokenizer.pretokenize import pretokenize
    from cm3jax.image_tokenizer.train import train as train_image_tokenizer
    from cm3jax.shapes.dataset import WorldSpec, make
    from cm3jax.text_tokenizer import shapes_corpus, train_text_tokenizer
    from cm3jax.train.loop import train

    paths = {k: os.path.join(workdir, v) for k, v in
             dict(shapes="shapes", text="text.model", vqgan="vqgan", codes="codes", decoder="decoder").items()}
    world = load_config(f"{ROOT}/experiments/shapes_world.py:{'tiny' if variant == 'test' else 'default'}").world
    vq_config = load_config(f"{ROOT}/tokenizers/vqgan_shapes.py:{'tiny' if variant == 'test' else 'default'}")
    overrides = [f"--config.data.shapes_dir={paths['shapes']}", f"--config.data.codes_dir={paths['codes']}",
                 f"--config.data.text_tokenizer={paths['text']}", f"--config.data.image_tokenizer={paths['vqgan']}"]
    decoder_config = load_config(f"{ROOT}/experiments/shapes_tiny.py:{variant}", overrides)
    timings = {
        "shapes": _stage("make the Shapes world", os.path.exists(os.path.join(paths["shapes"], "cm3jax_shapes.json")),
                         lambda: make(paths["shapes"], WorldSpec(**world))),
        "text_tokenizer": _stage("train the text tokenizer", os.path.exists(paths["text"]),
                                 lambda: train_text_tokenizer(shapes_corpus(world.num_train), 512).save(paths["text"])),
        "image_tokenizer": _stage("train the VQ-GAN", latest_step(paths["vqgan"]) == vq_config.training.steps,
                                  lambda: train_image_tokenizer(vq_config, paths["vqgan"])),
        "pretokenize": _stage("pretokenize every image", os.path.exists(os.path.join(paths["codes"], "cm3jax_codes.json")),
                              lambda: pretokenize(paths["shapes"], paths["codes"], load_tokenizer(paths["vqgan"])[0])),
        "decoder": _stage("train the decoder", os.path.exists(os.path.join(paths["decoder"], "results.json")),
                          lambda: train(decoder_config, paths["decoder"])),
    }
    with open(os.path.join(paths["decoder"], "results.json")) as f:
        results = json.load(f)
    results["stage_seconds"] = timings
    print(json.dumps(results, indent=2))
    print(f"[demo] pictures: {paths['decoder']}/samples.png, {paths['decoder']}/loss.png, {paths['vqgan']}")
    return results
