"""Benchmark: how long the sharded train step of CM3Leon 7B takes to trace and lower, and to
compile, with its blocks unrolled and scanned (model.scan_layers).

    python experiments/bench/compile_train_step.py --scan-layers true
    python experiments/bench/compile_train_step.py --scan-layers false [--layers 8] [--batch 8] [--mesh 1,4,2]

The step (cm3jax.train.step.jit_train_step: forward, backward, AdamW) of experiments/cm3leon_7b.py
at its 4,096-token context is lowered for abstract inputs (ShapeDtypeStructs: nothing is
allocated or run) on a fake mesh of 8 CPU devices and compiled by XLA:CPU. Run one setting per
process, so that neither inherits the other's warm caches. `--layers` measures fewer blocks
(compile time of the unrolled step grows with the block count; the scanned one's barely does).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from cm3jax.benchmarking import machine  # noqa: E402
from cm3jax.config import decoder_config, load_config  # noqa: E402
from cm3jax.data.pipeline import BATCH_KEYS  # noqa: E402
from cm3jax.model.decoder import Decoder  # noqa: E402
from cm3jax.sharding import make_mesh, mesh_context  # noqa: E402
from cm3jax.train.optimizer import make_optimizer  # noqa: E402
from cm3jax.train.step import jit_train_step  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "cm3leon_7b.py"


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def compile_seconds(scan_layers: bool, layers: int | None, batch: int, mesh_shape: tuple[int, ...]) -> dict:
    """Seconds to trace and lower the train step, and to compile it."""
    config = load_config(str(CONFIG))
    model = dataclasses.replace(decoder_config(config), scan_layers=scan_layers,
                                n_layers=layers or config.model.n_layers)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Decoder(model, nnx.Rngs(0))), nnx.Param)
    tx, schedule = make_optimizer(config.train, max(config.train.steps, config.train.warmup_steps + 1))
    opt_state = jax.eval_shape(tx.init, params)
    shape = (batch, config.train.seq_len)
    inputs = {k: jax.ShapeDtypeStruct(shape, jnp.float32 if k == "weights" else jnp.int32) for k in BATCH_KEYS}
    mesh = make_mesh(mesh_shape)
    with mesh_context(mesh):
        step = jit_train_step(graphdef, tx, schedule, params, opt_state, mesh)
        start = time.perf_counter()
        lowered = step.lower(params, opt_state, inputs)
        lowered_at = time.perf_counter()
        lowered.compile()
        compiled_at = time.perf_counter()
    return {"layers": model.n_layers, "tokens": shape, "lower": lowered_at - start, "compile": compiled_at - lowered_at}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scan-layers", type=_flag, required=True, help="true or false")
    parser.add_argument("--layers", type=int, default=None, help="blocks to build (default: the config's 32)")
    parser.add_argument("--batch", type=int, default=8, help="rows of the 4,096-token batch")
    parser.add_argument("--mesh", default="1,4,2", help="data,fsdp,tensor over the 8 fake devices")
    args = parser.parse_args()
    mesh_shape = tuple(int(n) for n in args.mesh.split(","))
    seconds = compile_seconds(args.scan_layers, args.layers, args.batch, mesh_shape)
    print(f"machine: {machine()}")
    print(f"cm3leon_7b train step, {seconds['layers']} layers, batch {seconds['tokens'][0]} x {seconds['tokens'][1]}, "
          f"mesh {mesh_shape}, scan_layers={args.scan_layers}")
    print(f"trace + lower: {seconds['lower']:.1f} s")
    print(f"compile:       {seconds['compile']:.1f} s")


if __name__ == "__main__":
    main()
