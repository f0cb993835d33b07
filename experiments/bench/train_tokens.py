"""Benchmark: training tokens/s on bench-small, side by side with Hugging Face's
`ChameleonForConditionalGeneration` in PyTorch on CPU (../shared/BENCH.md).

    python experiments/bench/train_tokens.py [--rounds 3] [--steps-per-round 2] [--json runs/bench/train_tokens.json]

Both sides do the same work per step: forward over a batch of 8 x 512 random token ids,
next-token cross-entropy, backward, global-norm clipping at 1.0 and an AdamW update
(b1 0.9, b2 0.98, weight decay 0.1), all float32. The two alternate in rounds so that
load from other jobs falls on both; the figure per side is its median step time. Also
reported: model FLOP/s (6 N + attention, per token) as a fraction of this machine's
f32 matmul rate measured in the same run, and the first call's compile time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cm3jax.benchmarking import chameleon_peer, machine, matmul_gflops, time_calls
from cm3jax.config import load_config
from cm3jax.experiment import decoder_config
from cm3jax.fileio import atomic_write_text
from cm3jax.model.config import DecoderConfig
from cm3jax.model.decoder import Decoder
from cm3jax.sharding import make_mesh, mesh_context
from cm3jax.train.optimizer import make_optimizer
from cm3jax.train.step import jit_train_step

BENCH_SMALL = str(Path(__file__).resolve().parents[1] / "bench_small.py")


def model_flops_per_token(config: DecoderConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x the matmul parameters (the output head included, the input
    embedding not) + 12 x layers x width x sequence length for attention (PaLM's count)."""
    matmul_params = config.n_layers * config.block_matmul_params() + config.vocab_size * config.d_model
    return 6 * matmul_params + 12 * config.n_layers * config.n_heads * config.head_size * seq_len


def random_batch(vocab_size: int, batch_size: int, seq_len: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab_size, (batch_size, seq_len + 1), dtype=np.int32)


class JaxSide:
    def __init__(self, config, ids: np.ndarray):
        model_config = decoder_config(config)
        self.mesh = make_mesh((len(jax.devices()), 1, 1))
        tx = make_optimizer(config.train, config.train.steps)
        with mesh_context(self.mesh):
            graphdef, params = nnx.split(Decoder(model_config, nnx.Rngs(0)), nnx.Param)
            opt_state = tx.init(params)
            self.step = jit_train_step(graphdef, tx, params, opt_state, self.mesh)
        b, t = ids.shape[0], ids.shape[1] - 1
        self.batch = {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
                      "weights": jnp.ones((b, t), jnp.float32),
                      "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
                      "segments": jnp.ones((b, t), jnp.int32)}
        self.state = (params, opt_state)
        self.compile_seconds = time_calls(self.run, 1)[0]
        self.parameters = model_config.param_count()

    def run(self) -> float:
        with mesh_context(self.mesh):
            params, opt_state, metrics = self.step(*self.state, self.batch)
        self.state = (params, opt_state)
        return float(metrics["loss"])


class TorchSide:
    """The peer: transformers' Chameleon at the same sizes, trained the way its users would."""

    def __init__(self, config, ids: np.ndarray):
        import torch

        self.torch = torch
        t = config.train
        self.model = chameleon_peer(config.model).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.peak_lr, betas=(t.b1, t.b2), eps=t.eps,
                                           weight_decay=t.weight_decay)
        self.clip_norm = t.clip_norm
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.parameters = sum(p.numel() for n, p in self.model.named_parameters() if "vqmodel" not in n)
        self.threads = torch.get_num_threads()
        self.attention = self.model.config._attn_implementation
        self.run()  # first call: allocations

    def run(self) -> float:
        inputs, labels = self.ids[:, :-1], self.ids[:, :-1]  # HF shifts labels by one inside the loss
        loss = self.model(input_ids=inputs, labels=labels).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--json", default="runs/bench/train_tokens.json")
    args = parser.parse_args()

    config = load_config(BENCH_SMALL)
    b, t = config.train.batch_size, config.train.seq_len
    ids = random_batch(config.model.vocab_size, b, t)
    ours, peer = JaxSide(config, ids), TorchSide(config, ids)
    times = {"cm3jax": [], "peer": []}
    for _ in range(args.rounds):
        times["cm3jax"] += time_calls(ours.run, args.steps_per_round)
        times["peer"] += time_calls(peer.run, args.steps_per_round)
    matmul = matmul_gflops()

    tokens = b * t
    flops_per_step = model_flops_per_token(decoder_config(config), t) * tokens
    rows = {}
    for side, step_times in times.items():
        seconds = statistics.median(step_times)
        rows[side] = {"step_seconds_median": seconds, "step_seconds": step_times, "tokens_per_second": tokens / seconds,
                      "model_gflops": flops_per_step / seconds / 1e9,
                      "fraction_of_matmul_rate": flops_per_step / seconds / 1e9 / matmul}
    rows["cm3jax"].update(compile_seconds=ours.compile_seconds, parameters=ours.parameters,
                          devices=len(jax.devices()))
    rows["peer"].update(parameters=peer.parameters, torch=peer.torch.__version__, threads=peer.threads,
                        attention=peer.attention)
    ratio = rows["cm3jax"]["tokens_per_second"] / rows["peer"]["tokens_per_second"]
    result = {"machine": machine(), "batch": [b, t], "model": config.model.to_dict(), "matmul_gflops": matmul,
              "model_gflop_per_step": flops_per_step / 1e9, **rows, "speedup": ratio, "target": 1.25}

    print(f"\nbench-small training, batch {b} x {t} tokens, float32, AdamW; {machine()}")
    print("| side | parameters | step s (median) | tokens/s | model GFLOP/s | of matmul rate |\n|---|---|---|---|---|---|")
    for side, label in (("cm3jax", "cm3jax (JAX)"), ("peer", f"HF Chameleon, torch {peer.torch.__version__} "
                                                            f"({peer.threads} threads, {peer.attention})")):
        r = rows[side]
        print(f"| {label} | {r['parameters']:,} | {r['step_seconds_median']:.2f} | {r['tokens_per_second']:.0f} "
              f"| {r['model_gflops']:.1f} | {r['fraction_of_matmul_rate']:.2f} |")
    print(f"\ncm3jax = {ratio:.2f}x the peer's tokens/s (target >= 1.25x); f32 matmul rate {matmul:.0f} GFLOP/s; "
          f"compile {ours.compile_seconds:.1f} s")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
