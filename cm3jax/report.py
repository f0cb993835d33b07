"""One HTML page for a finished demo: every stage's time, the training figures, the evaluation
suite's headline per task (its own report.html has every figure), and the pictures the stages
drew (loss curves, reconstructions, sample grids, sweeps), linked relatively so the workdir can be
copied or served as it is."""

from __future__ import annotations

import glob
import html
import os

from cm3jax.eval.report import STYLE, headline
from cm3jax.fileio import atomic_write_text

PICTURE_DIRS = ("vqgan", "clip", "decoder", "eval", "sft", "sft_eval")


def _value(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def _table(rows: dict, title: str) -> str:
    """A two-column table of a flat dict; nested dicts become their own tables."""
    flat = {k: v for k, v in rows.items() if not isinstance(v, (dict, list))}
    out = [f"<h3>{html.escape(title)}</h3>", "<table>"]
    out += [f"<tr><th>{html.escape(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in flat.items()]
    out.append("</table>")
    for k, v in rows.items():
        if isinstance(v, dict):
            out.append(_table(v, f"{title} / {k}"))
    return "\n".join(out)


def _evaluation(evaluation: dict, link: str, title: str) -> str:
    rows = []
    for task, entry in evaluation["tasks"].items():
        if entry["status"] != "done":
            rows.append((task, html.escape(f"{entry['status']}: {entry['reason']}")))
            continue
        rows += [(f"{task}: {name}", value) for name, value in headline(task, entry["results"])]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (f"<h3>{html.escape(title)} ({html.escape(evaluation['size'])}, "
            f"{evaluation['prompts_per_set']} prompts per set; "
            f"<a href='{html.escape(link)}'>every figure</a>)</h3><table>{cells}</table>")


def write_report(workdir: str, results: dict, title: str = "cm3jax demo on the Shapes world") -> str:
    """Writes WORKDIR/report.html and returns its path."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for key, directory, title in (("evaluation", "eval", "the decoder on the evaluation suite"),
                                  ("tuned_evaluation", "sft_eval", "the instruction-tuned decoder on every task")):
        if results.get(key):
            parts.append(_evaluation(results[key], f"{directory}/report.html", title))
    for key in ("decoder", "tuning", "retriever", "stage_seconds"):
        if isinstance(results.get(key), dict):
            parts.append(_table(results[key], key))
    for directory in PICTURE_DIRS:
        for path in sorted(glob.glob(os.path.join(workdir, directory, "*.png"))):
            relative = os.path.relpath(path, workdir)
            parts.append(f"<figure><img src='{html.escape(relative)}' alt='{html.escape(relative)}'>"
                         f"<figcaption>{html.escape(relative)}</figcaption></figure>")
    parts.append("</body></html>\n")
    path = os.path.join(workdir, "report.html")
    atomic_write_text(path, "\n".join(parts))
    return path
