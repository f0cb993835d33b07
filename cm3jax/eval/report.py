"""report.html for an evaluation suite's results: a table per task (each rate with its 95%
interval), plots of the sweeps (matplotlib), and the grids the tasks drew, beside results.json."""

from __future__ import annotations

import html
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from cm3jax.fileio import atomic_write_text  # noqa: E402
from cm3jax.image_tokenizer.report import save_figure  # noqa: E402

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}img{max-width:100%;image-rendering:pixelated}"
         "figure{margin:1.5em 0}")
RECORD_KEYS = ("prompt_set", "fingerprint", "settings", "seed", "retrieved", "samples", "reranked_by", "layout")


def _is_rate(value) -> bool:
    return isinstance(value, dict) and "rate" in value and "ci95" in value


def _format(value) -> str:
    if _is_rate(value):
        if value["rate"] is None:
            return "n/a (0 prompts)"
        low, high = value["ci95"]
        return f"{100 * value['rate']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] of {value['total']}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def figures(results: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(name, formatted value) for every figure of a task's results, settings left out."""
    rows = []
    for key, value in results.items():
        name = f"{prefix}{key}"
        if key in RECORD_KEYS:
            continue
        if _is_rate(value) or not isinstance(value, (dict, list)):
            rows.append((name, _format(value)))
        elif isinstance(value, dict):
            rows += figures(value, name + " / ")
    return rows


def _at(results: dict, *path):
    for key in path:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results


def headline(task: str, results: dict) -> list[tuple[str, str]]:
    """The few figures that state a task's finding, formatted (every figure is in `figures`)."""
    rows = []
    if task == "text_to_image":
        rows = [(f"{split} exact match", _at(results, split, "exact_match")) for split in results]
    elif task == "likelihood":
        rows = [(f"{split} {what} codes ranked first (teacher forcing)", _at(results, split, f"{what}_token_accuracy"))
                for split in results for what in ("drawn", "continued")]
    elif task == "retrieval":
        rows = [(f"{split} exact match, {k} retrieved", _at(results, split, "by_retrieved", k, "exact_match"))
                for split in results for k in sorted(results[split]["by_retrieved"])]
    elif task == "emblems":
        rows = [(f"pixel accuracy, {k} retrieved", _at(results, "by_retrieved", k, "emblem_pixel_accuracy"))
                for k in sorted(results["by_retrieved"])]
        rows.append(("first document is the emblem", results.get("first_document_is_the_emblem")))
    elif task == "cfg":
        for strategy, by_scale in results.items():
            best = max(by_scale, key=lambda s: by_scale[s]["exact_match"]["rate"] or 0.0)
            rows += [(f"{strategy} exact match, scale 1", _at(by_scale, "1", "exact_match")),
                     (f"{strategy} exact match, best scale {best}", _at(by_scale, best, "exact_match"))]
    elif task == "decoding":
        rows = [(f"{strategy} exact match, best of {n} by CLIP", _at(results, strategy, n, "exact_match"))
                for strategy in results for n in ("1", "8")]
    elif task in ("caption", "caption_short", "caption_long"):
        rows = [("exact match", results["exact_match"]), ("CIDEr-D", results["cider"])]
    elif task == "structure":
        rows = [(f"from {kind} maps, exact match", _at(results, kind, "exact_match")) for kind in results]
    else:
        key = {"vqa": "accuracy", "grounding": "iou_at_0.5"}.get(task, "exact_match")
        rows = [(key.replace("_", " "), results.get(key))]
    return [(name, _format(value)) for name, value in rows]


def summary(results: dict) -> str:
    """Each task's headline (or why it was not scored) as plain text, for a terminal."""
    lines = []
    for task, entry in results["tasks"].items():
        if entry["status"] != "done":
            lines.append(f"{task}: {entry['status']} ({entry['reason']})")
            continue
        lines.append(f"{task} ({entry['seconds']:.0f} s)")
        lines += [f"  {name}: {value}" for name, value in headline(task, entry["results"])]
    lines.append(f"results.json and report.html: {results['out']}")
    return "\n".join(lines)


def _rate(value) -> float:
    return float("nan") if value is None or value.get("rate") is None else 100 * value["rate"]


def _lines(ax, series: dict[str, dict]) -> None:
    """One line per series: exact match (%) against each entry's numeric key, ticked at the keys."""
    keys = set()
    for label, by_key in series.items():
        points = sorted((float(k), _rate(v["exact_match"])) for k, v in by_key.items())
        ax.plot(*zip(*points), marker="o", label=label)
        keys |= {x for x, _ in points}
    ax.set_xticks(sorted(keys), [f"{x:g}" for x in sorted(keys)])


def plot(task: str, results: dict, out: str) -> str | None:
    """The task's sweep as a PNG in `out` (its file name), or None for a task without one."""
    figure, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if task == "retrieval":
        _lines(ax, {split: found["by_retrieved"] for split, found in results.items()})
        ax.set_xlabel("retrieved documents")
        ax.set_ylabel("text -> image exact match (%)")
    elif task == "emblems":
        points = sorted((int(k), 100 * v["emblem_pixel_accuracy"]) for k, v in results["by_retrieved"].items())
        ax.bar([str(k) for k, _ in points], [v for _, v in points])
        ax.set_xlabel("retrieved documents")
        ax.set_ylabel("unseen emblem pixel accuracy (%)")
    elif task == "cfg":
        _lines(ax, results)
        ax.set_xlabel("classifier-free guidance scale")
        ax.set_ylabel("exact match (%)")
    elif task == "decoding":
        ax.set_xscale("log", base=2)
        _lines(ax, results)
        ax.set_xlabel("samples per prompt, best kept by CLIP")
        ax.set_ylabel("exact match (%)")
    else:
        plt.close(figure)
        return None
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.set_ylim(0, 100)  # every plotted figure is a percentage
    ax.set_title(task)
    ax.grid(alpha=0.3)
    name = f"{task}_plot.png"
    save_figure(figure, os.path.join(out, name))
    return name


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _image(name: str) -> str:
    return f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'><figcaption>{html.escape(name)}" \
           f"</figcaption></figure>"


def write(out: str, results: dict) -> str:
    """Writes OUT/report.html (and the plots beside it); returns its path."""
    title = f"cm3jax eval: {results['suite']} suite, {results['size']} ({results['split']})"
    checkpoint = results["checkpoint"]
    machine = results["machine"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             _table([("checkpoint", html.escape(f"{checkpoint['workdir']} at step {checkpoint['step']}")),
                     ("trained for", html.escape(", ".join(results["trained_tasks"]))),
                     ("seed", str(results["seed"])), ("prompts per set", str(results["prompts_per_set"])),
                     ("machine", html.escape(f"{machine['cpu']} ({machine['isa']}), {machine['cores']} cores, "
                                             f"{machine['backend']}"))]),
             "<h2>Prompt sets</h2>",
             _table([(role, html.escape(f"{ps['split']}: {ps['size']} prompts, {ps['fingerprint'][:19]}..., "
                                        f"{ps['skipped_as_trained']} skipped as trained on"
                                        + (" (exhausted)" if ps["exhausted"] else "")))
                     for role, ps in results["prompt_sets"].items()])]
    for task, entry in results["tasks"].items():
        parts.append(f"<h2>{html.escape(task)}: {html.escape(entry['status'])}</h2>")
        if entry["status"] != "done":
            parts.append(f"<p>{html.escape(entry['reason'])}</p>")
            continue
        parts.append(_table(headline(task, entry["results"]) + [("seconds", f"{entry['seconds']:.1f}")]))
        picture = plot(task, entry["results"], out)
        for name in ([picture] if picture else []) + entry.get("grids", []):
            parts.append(_image(name))
        settings = json.dumps(entry["results"], indent=1, default=str)
        parts.append(f"<details><summary>every figure</summary>{_table(figures(entry['results']))}</details>"
                     f"<details><summary>every figure with its settings (JSON)</summary>"
                     f"<pre>{html.escape(settings)}</pre></details>")
    parts.append("</body></html>\n")
    path = os.path.join(out, "report.html")
    atomic_write_text(path, "\n".join(parts))
    return path
