"""Where a decode step's time goes: bench-small's KV-cached sampling (the decode_tokens.py
cases) traced with jax.profiler, each XLA op's time summed by the source function that made it.

    python experiments/bench/profile_decode.py [--cases "batch 1,batch 8"] [--top 12]
        [--json runs/bench/profile_decode.json]

The model, prompts and cases are decode_tokens.py's (its JaxSide, which compiles every case as
it is built); the script traces one more call of each case. Every op the CPU
runtime executed (the trace's events with an `hlo_op`; control thunks such as `while` and
`cond`, which contain others, are left out) is charged to the Python function that emitted it
(the innermost frame of its stack in the optimized HLO that XLA dumps: `layers.py:Attention.__call__`,
`strategies.py:...`), and summed per function. Times are thread
time: where XLA splits an op over both cores, both halves count. Run it on a quiet machine.
"""

from __future__ import annotations

import os
import sys
import tempfile

DUMP = tempfile.mkdtemp(prefix="profile_decode_hlo_")
if "jax" in sys.modules:
    raise SystemExit("profile_decode: import this script before jax (it sets XLA_FLAGS to dump the HLO)")
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={DUMP} --xla_dump_hlo_as_text".strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

from cm3jax.benchmarking import QuietCheck, machine  # noqa: E402
from cm3jax.config import decoder_config, load_config  # noqa: E402
from cm3jax.errors import UserError  # noqa: E402
from cm3jax.fileio import atomic_write_text  # noqa: E402
from decode_tokens import CASES, JaxSide, bench_vocab  # noqa: E402  (this script's folder is on sys.path)

EXPERIMENTS = Path(__file__).resolve().parents[1]
CONTROL = ("while", "cond", "conditional", "call")  # thunks whose time is that of the ops inside them
INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{([^}]*)\}")
FIELD_EQ = re.compile(r"(\w+)=(\d+)")


def _tables(lines: list[str]) -> dict[str, dict[int, str]]:
    """The HLO text's FileNames / FunctionNames / FileLocations / StackFrames tables: id -> entry."""
    tables, current = {}, None
    for line in lines:
        stripped = line.strip()
        if stripped in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = tables.setdefault(stripped, {})
        elif not stripped or not stripped[0].isdigit():
            current = None
        elif current is not None:
            key, _, value = stripped.partition(" ")
            current[int(key)] = value.strip('"')
    return tables


def hlo_sources(dump_dir: str, module: str, program_id: int) -> dict[str, str]:
    """op name -> `file.py:function` of the innermost Python frame that emitted it, from the
    optimized HLO XLA dumped for that program (its stack-frame tables)."""
    sources = {}
    for path in glob.glob(os.path.join(dump_dir, f"module_{program_id:04d}.{module}.*after_optimizations.txt")):
        with open(path) as f:
            lines = f.readlines()
        tables = _tables(lines)
        files, functions = tables.get("FileNames", {}), tables.get("FunctionNames", {})
        locations, frames = tables.get("FileLocations", {}), tables.get("StackFrames", {})
        for line in lines:
            match = INSTRUCTION.match(line)
            frame = dict(FIELD_EQ.findall(match.group(2))).get("stack_frame_id") if match else None
            if frame is None or int(frame) not in frames:
                continue
            location_id = dict(FIELD_EQ.findall(frames[int(frame)])).get("file_location_id", "0")
            location = dict(FIELD_EQ.findall(locations.get(int(location_id), "")))
            if "file_name_id" in location:
                where = os.path.basename(files.get(int(location["file_name_id"]), "?"))
                sources[match.group(1)] = f"{where}:{functions.get(int(location['function_name_id']), '?')}"
    return sources


def op_times(profile_dir: str) -> dict[tuple[str, int, str], float]:
    """(module, program id, op) -> summed thread seconds of its executions in the trace."""
    path = glob.glob(os.path.join(profile_dir, "**", "*.xplane.pb"), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    times = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                op = stats.get("hlo_op")
                if op is None or op.split(".")[0] in CONTROL:
                    continue
                times[(stats.get("hlo_module", "?"), int(stats.get("program_id", -1)), op)] += event.duration_ns / 1e9
    return times


def profile_case(ours: JaxSide, case: str) -> dict:
    """One traced call of `case` on decode_tokens' JaxSide (already compiled), its ops' thread
    time summed per emitting function."""
    trace_dir = tempfile.mkdtemp(prefix="profile_decode_trace_")
    with jax.profiler.trace(trace_dir):
        start = time.perf_counter()
        ours.run(case)
        wall = time.perf_counter() - start
    times = op_times(trace_dir)
    sources = {key: hlo_sources(DUMP, *key) for key in {(module, program) for module, program, _ in times}}
    by_function, ops = collections.Counter(), collections.Counter()
    new_tokens = ours.new_tokens
    for (module, program, op), seconds in times.items():
        kind = op.rsplit(".", 1)[0] if op.rsplit(".", 1)[-1].isdigit() else op
        function = sources[(module, program)].get(op, f"{module}: {kind} (no source)")
        by_function[function] += seconds
        ops[(f"{module}/{op}", function)] += seconds
    total = sum(times.values())
    batch, scale = CASES[case]
    return {"batch": batch, "cfg_scale": scale, "wall_seconds": wall, "step_ms": 1e3 * wall / new_tokens,
            "op_thread_seconds": total,
            "by_function": [{"function": f, "ms_per_step": 1e3 * s / new_tokens, "share": s / total}
                            for f, s in by_function.most_common()],
            "top_ops": [{"op": o, "function": f, "ms_per_step": 1e3 * s / new_tokens, "share": s / total}
                        for (o, f), s in ops.most_common(20)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(EXPERIMENTS / "bench_small.py"))
    parser.add_argument("--cases", default="batch 1,batch 8")
    parser.add_argument("--top", type=int, default=12, help="functions shown per case")
    parser.add_argument("--allow-busy", action="store_true", help="profile even if other work holds the machine")
    parser.add_argument("--json", default="runs/bench/profile_decode.json")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",")]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise UserError(f"Unknown case {unknown[0]!r}; choose from {', '.join(CASES)}.")
    quiet = QuietCheck(allow_busy=args.allow_busy)
    quiet.check()
    quiet.kept()

    config = load_config(args.config)
    model_config = decoder_config(config)
    d = config.decode
    ours = JaxSide(model_config, bench_vocab(model_config, d.new_tokens), d.prompt_len, d.new_tokens, d.top_p)
    results = {case: profile_case(ours, case) for case in cases}

    print(f"\nwhere a decode step's time goes ({args.config}, {d.prompt_len}-token prompt + {d.new_tokens} new "
          f"tokens, top-p {d.top_p}, float32); {machine()}; {quiet.summary()}")
    for case, r in results.items():
        print(f"\n{case}: {r['step_ms']:.2f} ms per step (wall); ops {1e3 * r['op_thread_seconds'] / d.new_tokens:.2f}"
              f" thread-ms per step\n| function | thread-ms per step | share |\n|---|---|---|")
        for row in r["by_function"][:args.top]:
            print(f"| {row['function']} | {row['ms_per_step']:.3f} | {row['share']:.1%} |")
        print("\nits costliest ops:\n| op | function | thread-ms per step |\n|---|---|---|")
        for row in r["top_ops"][:8]:
            print(f"| {row['op']} | {row['function']} | {row['ms_per_step']:.3f} |")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    atomic_write_text(args.json, json.dumps({"machine": machine(), "config": args.config, "quiet": quiet.record(),
                                             "cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        raise SystemExit(f"profile_decode: {error}")
