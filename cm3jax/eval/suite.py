"""`cm3jax eval`: one command that scores a trained checkpoint on every Shapes task.

    results = run_suite("runs/demo/decoder", size="quick")        # OUT/results.json, OUT/report.html

Each task runs where the checkpoint was trained for it and is reported "not trained" otherwise;
one that needs what the run lacks (a retriever, a CLIP) is reported "unavailable". A task named
with `tasks` that cannot run, or that fails, is an error: the rest still run, and results.json
and report.html are rewritten after every task, so nothing measured is lost (`SuiteErrors` then
names each problem). Sizes: `quick` (128 prompts per set, under 10 minutes for the demo's model on
a 2-core CPU), `full` (1,068: a rate's 95% interval is within +-3 points wherever it lies) and
`smoke` (4, to check that everything runs).
"""

from __future__ import annotations

import json
import os
import time

import jax
from tqdm import tqdm

from cm3jax.benchmarking import cpu_name_and_isa
from cm3jax.errors import UserError
from cm3jax.eval import report
from cm3jax.eval.shapes_tasks import TASKS, Context
from cm3jax.fileio import atomic_write_text
from cm3jax.paths import find_path
from cm3jax.retrieval.embedder import ClipEmbedder
from cm3jax.retrieval.index import MANIFEST as INDEX_MANIFEST
from cm3jax.retrieval.retriever import Retriever
from cm3jax.sampling.inference import TrainedDecoder
from cm3jax.shapes.dataset import load_spec

SUITES = ("shapes",)
SIZES = {"smoke": 4, "quick": 128, "full": 1068}
SPLITS = ("eval", "dev")
RESULTS_JSON = "results.json"


class SuiteErrors(UserError):
    """Some tasks could not be scored; `results` holds everything that was."""

    def __init__(self, problems: list[str], results: dict, out: str):
        self.results = results
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} task(s) not scored:\n{listed}\nEverything else is in {out}.")


def check_request(suite: str, size: str, tasks: list[str] | None, split: str) -> list[str]:
    """The tasks to run, or an error naming what is unknown (before anything loads)."""
    if suite not in SUITES:
        raise UserError(f"Unknown suite {suite!r}; choose one of {', '.join(SUITES)}.")
    if size not in SIZES:
        raise UserError(f"Unknown size {size!r}; choose one of {', '.join(SIZES)}.")
    if split not in SPLITS:
        raise UserError(f"Prompts come from {' or '.join(SPLITS)} (dev: for choosing recipes), not {split!r}.")
    unknown = [t for t in tasks or () if t not in TASKS]
    if unknown:
        raise UserError(f"Unknown task(s) {', '.join(unknown)}; the {suite} suite has {', '.join(TASKS)}.")
    return list(tasks) if tasks else list(TASKS)


def find_retriever(bank_dir: str, index_dir: str | None) -> tuple[Retriever | None, str]:
    """The retriever a run was trained with: `index_dir`, else an index beside its bank that
    indexes it (the layout `cm3jax demo` writes); or None and why."""
    if index_dir:
        return Retriever.load(index_dir), ""
    if not bank_dir:
        return None, ("this checkpoint was trained without retrieval (no data.retrieval_bank); pass --index DIR "
                      "to retrieve for it anyway")
    bank_dir = os.path.abspath(bank_dir)
    beside = os.path.join(os.path.dirname(bank_dir), "index")
    if (INDEX_MANIFEST.exists(beside)
            and os.path.abspath(find_path(INDEX_MANIFEST.read(beside)["bank"], beside)) == bank_dir):
        return Retriever.load(beside), ""
    return None, (f"no index of its bank {bank_dir} was found beside it; pass --index DIR (build one with "
                  f"`cm3jax retrieval build --bank {bank_dir} --out DIR`)")


def find_clip(retriever: Retriever | None, clip_dir: str | None) -> ClipEmbedder | None:
    """The CLIP that re-ranks samples: `clip_dir`'s, else the retriever's own."""
    if clip_dir:
        return ClipEmbedder.load(clip_dir)
    if retriever is not None and isinstance(retriever.embedder, ClipEmbedder):
        return retriever.embedder
    return None


def run_suite(checkpoint: str, size: str = "quick", tasks: list[str] | None = None, out: str | None = None,
              split: str = "eval", index: str | None = None, clip: str | None = None, seed: int = 0,
              suite: str = "shapes", progress: bool = True) -> dict:
    """Scores the newest checkpoint of a `cm3jax train` run; returns what results.json holds."""
    names = check_request(suite, size, tasks, split)
    trained = TrainedDecoder.load(checkpoint)
    out = out or os.path.join(checkpoint, "eval", f"{suite}-{size}-{split}")
    os.makedirs(out, exist_ok=True)
    retriever, no_retriever = find_retriever(trained.config.data.get("retrieval_bank", ""), index)
    ctx = Context(trained, load_spec(trained.config.data.shapes_dir), SIZES[size], split, seed, out, retriever,
                  find_clip(retriever, clip), progress, no_retriever)
    cpu, isa = cpu_name_and_isa()
    results = {"suite": suite, "out": os.path.abspath(out), "size": size, "split": split, "seed": seed, "prompts_per_set": SIZES[size],
               "checkpoint": {"workdir": os.path.abspath(checkpoint), "step": trained.step},
               "trained_tasks": sorted(ctx.tasks_trained),
               "machine": {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "backend": jax.default_backend()},
               "prompt_sets": {}, "tasks": {}}
    problems = []
    # tasks differ a hundredfold in cost, so only each task's own bar says how long is left
    with tqdm(total=len(names), desc=f"cm3jax eval ({size})", disable=not progress,
              bar_format="{desc}: task {n_fmt}/{total_fmt}, {elapsed} so far{postfix}") as overall:
        for name in names:
            overall.set_postfix_str(name)
            entry = _run_task(TASKS[name], ctx)
            results["tasks"][name] = entry
            if entry["status"] == "error" or (tasks and entry["status"] != "done"):
                problems.append(f"{name}: {entry['status']}: {entry['reason']}")
            results["prompt_sets"] = {role: ps.to_json() for role, ps in ctx.prompt_sets().items()}
            _write(out, results)
            overall.update()
    if problems:
        raise SuiteErrors(problems, results, out)
    return results


def _run_task(task, ctx: Context) -> dict:
    why = task.not_trained(ctx)
    if why:
        return {"status": "not trained", "reason": why}
    why = task.needs(ctx)
    if why:
        return {"status": "unavailable", "reason": why}
    start = time.perf_counter()
    try:
        measured = task.run(ctx)
    except UserError as e:
        return {"status": "error", "reason": str(e), "seconds": time.perf_counter() - start}
    return {"status": "done", "seconds": time.perf_counter() - start, **measured}


def _write(out: str, results: dict) -> None:
    atomic_write_text(os.path.join(out, RESULTS_JSON), json.dumps(results, indent=2) + "\n")
    report.write(out, results)
