"""Benchmark: offline pre-tokenization of 32x32 Shapes images with the Shapes VQ-GAN's sizes.

    python experiments/bench/pretokenize.py [--images 5000] [--batch-size 64] [--json runs/bench/pretokenize.json]

The tokenizer has random weights (`VQGANConfig()`: factor 4, 32x32 -> 8x8 codes of 1024) until
the trained one exists; speed does not depend on the weights. Every Shapes scene gives five
images (scene, edit, grounding, edges, segmentation), so --images 5000 makes 1000 scenes.

Measured side by side in this run (docs/benchmarks.md):
- the pipeline: `pretokenize` end to end (read ArrayRecord, encode, write), with and without
  its one compilation;
- its ceiling: the jitted encoder alone on batches already in memory;
- the peer: Hugging Face's `ChameleonVQVAE.encode` (PyTorch, CPU) at the same sizes and batch;
- the encoder's FLOP rate (XLA cost analysis) as a fraction of this machine's f32 matmul rate.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax.benchmarking import machine, matmul_gflops
from cm3jax.fileio import atomic_write_text
from cm3jax.image_tokenizer.model import VQGAN, VQGANConfig
from cm3jax.image_tokenizer.codec import ImageEncoder
from cm3jax.image_tokenizer.pretokenize import pretokenize
from cm3jax.shapes.dataset import WorldSpec, make

IMAGES_PER_SCENE = 5


def encoder_flops_per_image(model: VQGAN, batch_size: int, resolution: int) -> float:
    graphdef, state = nnx.split(model)
    codes_of = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x)[1])
    images = jax.ShapeDtypeStruct((batch_size, resolution, resolution, 3), jnp.float32)
    cost = codes_of.lower(state, images).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / batch_size


def encode_only(model: VQGAN, batch_size: int, resolution: int, num_images: int) -> dict:
    """The ceiling: the pipeline's own jitted encoder on batches already in memory."""
    encoder = ImageEncoder(model, batch_size)
    images = np.random.default_rng(0).integers(0, 256, (batch_size, resolution, resolution, 3), dtype=np.uint8)
    start = time.perf_counter()
    np.asarray(encoder.dispatch(images))
    first_call = time.perf_counter() - start
    batches = max(num_images // batch_size, 1)
    start = time.perf_counter()
    for _ in range(batches):
        codes = encoder.dispatch(images)
    np.asarray(codes)
    seconds = time.perf_counter() - start
    steady_batch = seconds / batches
    return {"images": batches * batch_size, "seconds": seconds, "images_per_second": batches * batch_size / seconds,
            "compile_seconds": max(first_call - steady_batch, 0.0)}


def torch_peer(config: VQGANConfig, batch_size: int, num_images: int) -> dict | None:
    """Hugging Face's Chameleon VQ-VAE encoder at the same sizes, PyTorch on CPU, every core."""
    try:
        import torch
        from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig
        from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE
    except ImportError as e:
        print(f"peer skipped: {e} (install the `bench` extra)")
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    peer_config = ChameleonVQVAEConfig(
        embed_dim=config.embed_dim, num_embeddings=config.codebook_size, latent_channels=config.z_channels,
        resolution=config.resolution, in_channels=config.in_channels, base_channels=config.base_channels,
        channel_multiplier=list(config.channel_multipliers), num_res_blocks=config.num_res_blocks,
        attn_resolutions=list(config.attn_resolutions) or None)
    model = ChameleonVQVAE._from_config(peer_config).eval()
    images = torch.rand(batch_size, config.in_channels, config.resolution, config.resolution) * 2 - 1
    batches = max(num_images // batch_size, 1)
    with torch.inference_mode():
        model.encode(images)
        start = time.perf_counter()
        for _ in range(batches):
            model.encode(images)
        seconds = time.perf_counter() - start
    return {"images": batches * batch_size, "seconds": seconds, "images_per_second": batches * batch_size / seconds,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "encoder_parameters": sum(p.numel() for part in (model.encoder, model.quant_conv, model.quantize)
                                      for p in part.parameters())}


def pipeline(model: VQGAN, num_images: int, batch_size: int, compile_seconds: float) -> dict:
    scenes = max(num_images // IMAGES_PER_SCENE, 1)
    world = WorldSpec(num_train=scenes, num_eval=0, num_novel=0, num_emblems_unseen=0, num_memory=0)
    with tempfile.TemporaryDirectory() as tmp:
        make(os.path.join(tmp, "shapes"), world, progress=False)
        figures = pretokenize(os.path.join(tmp, "shapes"), os.path.join(tmp, "codes"), model, batch_size)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(tmp, "codes")) for f in fs)
    steady_seconds = figures["seconds"] - compile_seconds * figures["compilations"]
    return {"scenes": scenes, "images": figures["images"], "seconds": figures["seconds"],
            "images_per_second": figures["images_per_second"], "compilations": figures["compilations"],
            "images_per_second_without_compile": figures["images"] / steady_seconds, "bytes": size}


def encoder_parameters(model: VQGAN) -> int:
    parts = (model.encoder, model.quant_conv, model.quantize)
    return sum(int(np.prod(x.shape)) for part in parts for x in jax.tree.leaves(nnx.state(part, nnx.Param)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--side-by-side-images", type=int, default=1280,
                        help="images for the encoder-only ceiling and the PyTorch peer (rates, not totals)")
    parser.add_argument("--json", default="runs/bench/pretokenize.json")
    args = parser.parse_args()

    config = VQGANConfig()
    start = time.perf_counter()
    model = VQGAN(config, nnx.Rngs(0))
    init_seconds = time.perf_counter() - start
    matmul = matmul_gflops()
    flops = encoder_flops_per_image(model, args.batch_size, config.resolution)
    ceiling = encode_only(model, args.batch_size, config.resolution, args.side_by_side_images)
    peer = torch_peer(config, args.batch_size, args.side_by_side_images)
    full = pipeline(model, args.images, args.batch_size, ceiling["compile_seconds"])

    encoder_gflops = flops * ceiling["images_per_second"] / 1e9
    result = {
        "machine": machine(),
        "config": {**config.__dict__, "grid": config.grid_size(), "batch_size": args.batch_size},
        "encoder_parameters": encoder_parameters(model), "model_init_seconds": init_seconds,
        "encoder_mflops_per_image": flops / 1e6, "matmul_gflops": matmul,
        "encode_only": ceiling, "pretokenize": full, "peer_hf_torch": peer,
        "pipeline_fraction_of_encode_only": full["images_per_second_without_compile"] / ceiling["images_per_second"],
        "encoder_fraction_of_matmul_rate": encoder_gflops / matmul,
        "encode_only_vs_peer": ceiling["images_per_second"] / peer["images_per_second"] if peer else None,
    }
    print("\n| run | images | seconds | images/s |\n|---|---|---|---|")
    print(f"| pretokenize end to end (1 compile) | {full['images']} | {full['seconds']:.1f} "
          f"| {full['images_per_second']:.0f} |")
    print(f"| pretokenize without its compile | {full['images']} | "
          f"{full['images'] / full['images_per_second_without_compile']:.1f} "
          f"| {full['images_per_second_without_compile']:.0f} |")
    print(f"| jitted encoder alone (ceiling) | {ceiling['images']} | {ceiling['seconds']:.1f} "
          f"| {ceiling['images_per_second']:.0f} |")
    if peer:
        print(f"| HF ChameleonVQVAE.encode, torch {peer['torch']} ({peer['threads']} threads) | {peer['images']} "
              f"| {peer['seconds']:.1f} | {peer['images_per_second']:.0f} |")
    print(f"\npipeline = {result['pipeline_fraction_of_encode_only']:.2f} of the encoder alone; "
          f"encoder at {encoder_gflops:.1f} GFLOP/s = {result['encoder_fraction_of_matmul_rate']:.2f} of "
          f"this machine's f32 matmul rate ({matmul:.0f} GFLOP/s; {flops / 1e6:.0f} MFLOP per image); "
          f"compile {ceiling['compile_seconds']:.1f} s; {result['encoder_parameters']:,} encoder parameters")
    if peer:
        print(f"encoder alone = {result['encode_only_vs_peer']:.2f}x the PyTorch peer "
              f"({peer['encoder_parameters']:,} parameters)")
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
