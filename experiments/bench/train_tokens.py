"""Benchmark: training tokens/s on bench-small, side by side with Hugging Face's
`ChameleonForConditionalGeneration` in PyTorch on CPU (docs/benchmarks.md).

    python experiments/bench/train_tokens.py [--rounds 3] [--steps-per-round 3] [--allow-busy] [--max-isa AVX2]
        [--json runs/bench/train_tokens.json]

Both sides do the same work per step: forward over a batch of 8 x 512 random token ids,
next-token cross-entropy, backward, global-norm clipping at 1.0 and an AdamW update
(b1 0.9, b2 0.98, weight decay 0.1), all float32. Each side runs in processes of its own,
in the environment its users get: cm3jax's with the malloc settings its command line starts
with (cm3jax.hostmem: freed memory kept for reuse; --system-malloc drops them), the peer's as
this script was started (--peer-with-our-malloc gives it cm3jax's settings too). Every round
starts a fresh process per side, one after the other, so that load from other jobs falls on
both and neither runs beside the other; the figure per side is its median step time over the
quiet rounds (the idle CPU share is sampled before each; a round begun while other work held
more than a tenth of the machine is flagged and left out unless --allow-busy). Also
reported: model FLOP/s (6 N + attention, per token) as a fraction of this machine's f32
matmul rate measured in the same run (under the same ISA settings), the vector ISA each side
used, and the first call's compile time. --max-isa AVX2 holds both sides to AVX2 on a machine
with AVX-512 (cm3jax.benchmarking.ISA_CAPS says how, and what it cannot reach).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from cm3jax.benchmarking import (ISA_CAPS, QuietCheck, chameleon_peer, jax_vector_isa, machine, matmul_gflops,
                                 restart_with_isa_cap, time_calls, torch_vector_isa)
from cm3jax.config import load_config
from cm3jax.errors import UserError
from cm3jax.config import decoder_config
from cm3jax.fileio import atomic_write_text
from cm3jax.hostmem import malloc_environ
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
        tx, schedule = make_optimizer(config.train, config.train.steps)
        with mesh_context(self.mesh):
            graphdef, params = nnx.split(Decoder(model_config, nnx.Rngs(0)), nnx.Param)
            opt_state = tx.init(params)
            self.step = jit_train_step(graphdef, tx, schedule, params, opt_state, self.mesh)
        b, t = ids.shape[0], ids.shape[1] - 1
        self.batch = {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
                      "weights": jnp.ones((b, t), jnp.float32),
                      "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
                      "segments": jnp.ones((b, t), jnp.int32)}
        self.state = (params, opt_state)
        self.compile_seconds = time_calls(self.run, 1)[0]
        self.parameters = model_config.param_count()

    def describe(self) -> dict:
        return {"parameters": self.parameters, "compile_seconds": self.compile_seconds,
                "devices": len(jax.devices()), "vector_isa": jax_vector_isa(),
                "label": f"cm3jax (JAX {jax.__version__})"}

    def run(self) -> float:
        with mesh_context(self.mesh):
            params, opt_state, metrics = self.step(*self.state, self.batch)
        self.state = jax.block_until_ready((params, opt_state))  # the update too, not only the loss
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

    def describe(self) -> dict:
        return {"parameters": self.parameters, "torch": self.torch.__version__, "threads": self.threads,
                "attention": self.attention, "vector_isa": torch_vector_isa(self.torch),
                "label": f"HF Chameleon, torch {self.torch.__version__} ({self.threads} threads, {self.attention})"}

    def run(self) -> float:
        inputs, labels = self.ids[:, :-1], self.ids[:, :-1]  # HF shifts labels by one inside the loss
        loss = self.model(input_ids=inputs, labels=labels).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def measure(side: str, steps: int, conn) -> None:
    """In a process of its own: build `side`, time `steps` training steps after the first call
    and send them back with the side's description (cm3jax's: with this machine's matmul rate)."""
    config = load_config(BENCH_SMALL)
    ids = random_batch(config.model.vocab_size, config.train.batch_size, config.train.seq_len)
    runner = JaxSide(config, ids) if side == "cm3jax" else TorchSide(config, ids)
    result = {**runner.describe(), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
              "step_seconds": time_calls(runner.run, steps)}
    if side == "cm3jax":
        result["matmul_gflops"] = matmul_gflops()
    conn.send(result)


def measure_in_process(side: str, steps: int, environ: dict[str, str] | None) -> dict:
    """measure() in a spawned process started with `environ` (None: this process's), alone on
    the machine: an idle process that lives on beside the other side's slows it (the peer took
    6.5 s a step instead of 5.6 s beside an idle cm3jax process holding its heap), so each
    round starts both sides afresh, one after the other."""
    context = multiprocessing.get_context("spawn")
    here, there = context.Pipe()
    process = context.Process(target=measure, args=(side, steps, there))
    saved = dict(os.environ)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    try:
        process.start()  # the spawned interpreter inherits os.environ as it is now
    finally:
        if environ is not None:
            os.environ.clear()
            os.environ.update(saved)
    result = here.recv()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--system-malloc", action="store_true",
                        help="run cm3jax's side with malloc as this script was started, not as its command line sets it")
    parser.add_argument("--peer-with-our-malloc", action="store_true",
                        help="run the peer with cm3jax's malloc settings too (an allocator-neutral comparison)")
    parser.add_argument("--allow-busy", action="store_true", help="keep rounds timed beside other work in the medians")
    parser.add_argument("--max-isa", choices=sorted(ISA_CAPS),
                        help="hold both sides to this vector ISA (approximates a machine without the wider one)")
    parser.add_argument("--json", default="runs/bench/train_tokens.json")
    args = parser.parse_args()
    restart_with_isa_cap(args.max_isa)
    quiet = QuietCheck(allow_busy=args.allow_busy)

    config = load_config(BENCH_SMALL)
    b, t = config.train.batch_size, config.train.seq_len
    ours_environ = None if args.system_malloc else malloc_environ(os.environ)
    environs = {"cm3jax": ours_environ, "peer": ours_environ if args.peer_with_our_malloc else None}
    rounds = {side: [] for side in environs}
    for _ in tqdm(range(args.rounds), desc="rounds"):
        quiet.check()
        for side, environ in environs.items():
            rounds[side].append(measure_in_process(side, args.steps_per_round, environ))
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    atomic_write_text(args.json, json.dumps({"machine": machine(), "quiet": quiet.record(), "rounds": rounds},
                                            indent=2) + "\n")  # the raw rounds, kept whatever follows
    info = {side: {k: v for k, v in results[0].items() if k not in ("step_seconds", "matmul_gflops")}
            for side, results in rounds.items()}
    kept = {side: quiet.select(results) for side, results in rounds.items()}
    times = {side: [s for r in results for s in r["step_seconds"]] for side, results in kept.items()}
    matmul = statistics.median(r["matmul_gflops"] for r in kept["cm3jax"])
    info["cm3jax"]["compile_seconds"] = statistics.median(r["compile_seconds"] for r in kept["cm3jax"])

    tokens = b * t
    flops_per_step = model_flops_per_token(decoder_config(config), t) * tokens
    rows = {}
    for side, step_times in times.items():
        seconds = statistics.median(step_times)
        rows[side] = {**info[side], "step_seconds_median": seconds, "step_seconds": step_times,
                      "tokens_per_second": tokens / seconds, "model_gflops": flops_per_step / seconds / 1e9,
                      "fraction_of_matmul_rate": flops_per_step / seconds / 1e9 / matmul}
    ratio = rows["cm3jax"]["tokens_per_second"] / rows["peer"]["tokens_per_second"]
    result = {"machine": machine(), "batch": [b, t], "model": config.model.to_dict(), "matmul_gflops": matmul,
              "model_gflop_per_step": flops_per_step / 1e9, **rows, "speedup": ratio, "target": 1.25,
              "quiet": quiet.record()}

    print(f"\nbench-small training, batch {b} x {t} tokens, float32, AdamW; {machine()}; one process per side")
    print("| side | parameters | vector ISA | step s (median) | tokens/s | model GFLOP/s | of matmul rate "
          "| GLIBC_TUNABLES |\n|---|---|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['label']} | {r['parameters']:,} | {r['vector_isa']} | {r['step_seconds_median']:.2f} "
              f"| {r['tokens_per_second']:.0f} | {r['model_gflops']:.1f} | {r['fraction_of_matmul_rate']:.2f} "
              f"| {r['glibc_tunables'] or '-'} |")
    print(f"\ncm3jax = {ratio:.2f}x the peer's tokens/s (target >= 1.25x); f32 matmul rate {matmul:.0f} GFLOP/s; "
          f"compile {rows['cm3jax']['compile_seconds']:.1f} s; {quiet.summary()}")
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"train_tokens: {error}")
