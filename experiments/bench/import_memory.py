"""Benchmark: peak host memory of `cm3jax import chameleon` on a synthetic ~1B-parameter Hugging
Face Chameleon checkpoint (bfloat16 safetensors in 1 GiB shards with their index, the real file
layout), against the sizes of the files and of the imported float32 model.

    python experiments/bench/import_memory.py --work /tmp/import_memory [--json runs/bench/import_memory.json]

The checkpoint's weights are random; its vocabulary is a small BPE with Chameleon's specials and a
16-code image vocabulary, and a small VQ-VAE encoder sits under model.vqmodel (neither changes
the decoder's memory). The import runs in a child process, which reports its own peak resident set (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import ml_dtypes
import numpy as np

from cm3jax.benchmarking import machine
from cm3jax.chameleon.hf_config import decoder_fields
from cm3jax.chameleon.tensors import plan
from cm3jax.chameleon.vocabulary import image_token_name
from cm3jax.chameleon.weights import VQ_PREFIX, write_sharded
from cm3jax.model.config import DecoderConfig

CONFIG = dict(model_type="chameleon", vocab_size=65_536, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
              num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
              rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
              vq_config=dict(embed_dim=8, num_embeddings=16, latent_channels=32, resolution=16, base_channels=32,
                             channel_multiplier=[1, 2], num_res_blocks=1, attn_resolutions=[]))


# The import, then its own high-water mark: VmHWM belongs to the process image after exec, while
# getrusage's maxrss of a child would carry this (large) process's pages copied at fork.
CHILD = """
import sys
from cm3jax.cli import main
code = main(["import", "chameleon", "--from", sys.argv[1], "--out", sys.argv[2]])
print(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")))
sys.exit(code)
"""


def tokenizer_json(path: str) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    specials = ["<s>", "<pad>", "</s>", *sorted(image_token_name(c) for c in range(16)), "<racm3:break>", "<eoss>",
                "<image>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(["a large red circle in the top left"] * 4,
                                  trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False))
    tokenizer.save(path)
    return tokenizer.get_vocab()


def write_checkpoint(directory: str) -> int:
    from flax import nnx

    from cm3jax.image_tokenizer.chameleon import config_from_hf, taming_tensors
    from cm3jax.image_tokenizer.model import VQGAN
    os.makedirs(directory, exist_ok=True)
    config = dict(CONFIG, vocabulary_map=tokenizer_json(os.path.join(directory, "tokenizer.json")))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    rng = np.random.default_rng(0)

    def tensors():
        for tensor in plan(DecoderConfig(**decoder_fields(config))):
            yield tensor.hf_name, (0.02 * rng.standard_normal(tensor.hf_shape, np.float32)).astype(ml_dtypes.bfloat16)
        vq = VQGAN(config_from_hf(config), nnx.Rngs(0))
        for name, array in taming_tensors(vq, decoder=False).items():
            yield VQ_PREFIX + name, array
    write_sharded(tensors(), directory, max_shard_bytes=2 ** 30)
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory) if f.endswith(".safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="scratch directory (about 7 GB)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    source, out = os.path.join(args.work, "hf"), os.path.join(args.work, "imported")
    shutil.rmtree(args.work, ignore_errors=True)
    file_bytes = write_checkpoint(source)
    params = DecoderConfig(**decoder_fields(CONFIG)).param_count()
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, source, out], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = int(child.stdout.split("VmHWM:")[1].split()[0]) * 1024
    result = {"machine": machine(), "parameters": params, "safetensors_bytes": file_bytes,
              "largest_tensor_bytes_float32": 65_536 * 2048 * 4, "model_bytes_float32": params * 4,
              "peak_rss_bytes": peak, "seconds": round(seconds, 1)}
    gib = {k: round(v / 2 ** 30, 2) for k, v in result.items() if k.endswith("bytes") or k.endswith("_float32")}
    print(json.dumps({**result, "GiB": gib}, indent=2))
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
