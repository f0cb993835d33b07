"""Benchmark: `cm3jax shapes make` on 100,000 training scenes with every task variant.

    python experiments/bench/shapes_make.py [--num 100000] [--json runs/bench/shapes_make.json]

Prints a table and writes JSON. Target (issue: foundation): under 60 s for 100,000 scenes.
The ceiling, measured in the same run, is one worker's rate on a slice times the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from cm3jax.fileio import atomic_write_text
from cm3jax.shapes.dataset import WorldSpec, make


def _rate(num: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = WorldSpec(num_train=num, num_eval=0, num_novel=0, num_emblems_unseen=0, num_memory=0)
        start = time.perf_counter()
        make(os.path.join(tmp, "shapes"), spec, workers=workers, progress=True)
        seconds = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    return {"scenes": num, "workers": workers, "seconds": seconds, "scenes_per_second": num / seconds,
            "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=100_000)
    parser.add_argument("--json", default="runs/bench/shapes_make.json")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    single = _rate(max(args.num // 20, 1000), 1)
    full = _rate(args.num, workers)
    ceiling = single["scenes_per_second"] * workers
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {workers} cores, {platform.python_version()}",
        "single_worker": single, "full": full,
        "fraction_of_ceiling": full["scenes_per_second"] / ceiling,
        "target_seconds": 60.0, "met": full["seconds"] < 60.0 if args.num == 100_000 else None,
    }
    print("\n| run | scenes | workers | seconds | scenes/s | MB |\n|---|---|---|---|---|---|")
    for name, r in (("one worker", single), ("make", full)):
        print(f"| {name} | {r['scenes']} | {r['workers']} | {r['seconds']:.1f} | {r['scenes_per_second']:.0f} "
              f"| {r['bytes'] / 1e6:.0f} |")
    print(f"\nparallel efficiency: {result['fraction_of_ceiling']:.2f} of {workers} x one worker; "
          f"target < 60 s for 100,000: {'met' if result['met'] else 'missed' if result['met'] is False else 'n/a'}")
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
