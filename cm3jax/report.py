"""One HTML page for a finished demo: every stage's time, the scores as tables, and the
pictures the stages drew (loss curves, reconstructions, sample grids), linked relatively so
the workdir can be copied or served as it is."""

from __future__ import annotations

import glob
import html
import os

from cm3jax.fileio import atomic_write_text

PICTURE_DIRS = ("vqgan", "clip", "decoder")
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}img{max-width:100%;image-rendering:pixelated}"
         "figure{margin:1.5em 0}")


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


def write_report(workdir: str, results: dict, title: str = "cm3jax demo on the Shapes world") -> str:
    """Writes WORKDIR/report.html and returns its path."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for key in ("text_to_image", "text_to_image_retrieved", "emblems_unseen", "retriever", "stage_seconds"):
        if isinstance(results.get(key), dict):
            parts.append(_table(results[key], key))
    rest = {k: v for k, v in results.items() if not isinstance(v, (dict, list))}
    parts.append(_table(rest, "decoder run"))
    for directory in PICTURE_DIRS:
        for path in sorted(glob.glob(os.path.join(workdir, directory, "*.png"))):
            relative = os.path.relpath(path, workdir)
            parts.append(f"<figure><img src='{html.escape(relative)}' alt='{html.escape(relative)}'>"
                         f"<figcaption>{html.escape(relative)}</figcaption></figure>")
    parts.append("</body></html>\n")
    path = os.path.join(workdir, "report.html")
    atomic_write_text(path, "\n".join(parts))
    return path
