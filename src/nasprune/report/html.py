"""``report.html``: one self-contained page for an experiment run, readable offline.

The page holds the comparison table, the plots (PNG embedded as base64 ``data:`` URIs),
each method's details, the resolved config and the environment (versions, device, date).
No scripts, no external styles or fonts. Every string from the run — method names, notes,
error messages, config values — is HTML-escaped, so a hostile name stays text.
"""

from __future__ import annotations

import base64
import json
import os
import time
from html import escape
from pathlib import Path
from typing import Any

from nasprune._io import read_json, write_atomic
from nasprune.report.plots import PLOTS, make_plots
from nasprune.report.results import load_result
from nasprune.report.tables import (
    header,
    quality_label,
    seed_summary,
    summary_format,
    table_cells,
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
tr.failed td{background:#fdecea} .muted{color:#666} pre{background:#f7f7f7;padding:.8em;
overflow:auto;font-size:12px} img{max-width:100%;border:1px solid #eee;margin:.5em 0}
figure{margin:1em 0} figcaption{color:#555;font-size:13px}
"""

_CAPTIONS = {
    "accuracy_vs_macs": "Test top-1 accuracy (or the task's score) against MACs per image "
                        "after the same "
                        "fine-tuning; threshold pruning is placed at its sparse MACs.",
    "accuracy_vs_latency": "Test top-1 accuracy against measured batch-1 latency (median, "
                           "interleaved with the unpruned model); the legend gives each "
                           "method's measured speed-up.",
    "kept_channels": "Channels each group keeps, per structured method.",
    "search_progress": "Best proxy score (validation top-1 or the task's score, after "
                       "BatchNorm recalibration) "
                       "so far, per trial, for each search.",
    "sensitivity": "Validation top-1 (or the task's score) when one group alone is pruned "
                   "at each ratio.",
}


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _kv_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def _results_table(rows: list[dict]) -> str:
    several = len({r["seed"] for r in rows}) > 1
    head = "".join(f"<th>{_e(h)}</th>" for h in header(rows))
    body = []
    for r in rows:
        cls = "" if r["status"] == "ok" else " class=\"failed\""
        cells = "".join(f"<td>{_e(c)}</td>" for c in table_cells(r, several))
        body.append(f"<tr{cls}>{cells}</tr>")
    out = f"<table><tr>{head}</tr>{''.join(body)}</table>"
    if several:
        fmt = summary_format(rows)
        summ = "".join(f"<tr><td>{_e(m)}</td><td>{k}</td><td>{mu:{fmt}}</td>"
                       f"<td>{sd:{fmt}}</td></tr>" for m, k, mu, sd in seed_summary(rows))
        out += (f"<table><tr><th>method</th><th>runs</th><th>mean {_e(quality_label(rows))}"
                f"</th><th>std</th></tr>{summ}</table>")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        out += "<p><b>Failed methods</b></p><ul>" + "".join(
            f"<li><b>{_e(r['method'])}</b> (seed {_e(r['seed'])}): <code>{_e(r['error'])}"
            "</code></li>" for r in failed) + "</ul>"
    return out


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'


def _details(rows: list[dict]) -> str:
    parts = []
    for r in rows:
        info = r.get("info") or {}
        summary = f"{_e(r['method'])} (seed {_e(r['seed'])}) — {_e(r['status'])}"
        body = json.dumps({"info": info, "kept_channels": r.get("kept"), "error": r["error"]},
                          indent=1, default=str)
        parts.append(f"<details><summary>{summary}</summary><pre>{_e(body)}</pre></details>")
    return "".join(parts)


def _quality_text(m: dict) -> str:
    if "top1" in m:
        return f"top-1 {100 * m['top1']:.2f} %"
    better = "higher" if m.get("maximize", True) else "lower"
    return f"{m['score_name']} {m['score']:.4f} ({better} is better)"


def _setup(doc: dict, cfg: dict) -> list[tuple[str, Any]]:
    """The "Setup" table: model, data, budget, fine-tuning, seeds, the unpruned model."""
    base = doc["baseline"]
    ft = cfg.get("finetune") or {}
    task = cfg.get("task")
    return [
        ("model", cfg.get("checkpoint") or (f"the model of {task}" if task
                                            else cfg.get("model"))),
        ("data", f"task {task} {json.dumps(cfg.get('task_args') or {})}" if task
         else cfg.get("data")),
        ("budget", f"{doc.get('budget_macs_fraction', cfg.get('budget'))} of the unpruned "
                   "model's MACs"),
        ("fine-tuning", f"{ft.get('epochs')} epochs, {ft.get('optimizer')}, lr "
                        f"{ft.get('lr') or 'default'}, {ft.get('schedule')} schedule, "
                        f"distillation {'on' if ft.get('distill') else 'off'}"),
        ("seeds", ", ".join(map(str, cfg.get("seeds") or []))),
        ("unpruned model", f"test {_quality_text(base['metrics'])}, "
                           f"{base['metrics']['macs']:,} MACs, {base['metrics']['params']:,} "
                           f"params, trained in {base.get('train_seconds', 0):.1f} s"),
    ]


def _figures(run: Path) -> str:
    """Every plot already drawn in ``<run>/plots``, embedded, with its caption."""
    figures = []
    for name in PLOTS:
        path = run / "plots" / f"{name}.png"
        if path.is_file():
            figures.append(f"<figure>{_image(path)}<figcaption>{_e(_CAPTIONS[name])}"
                           "</figcaption></figure>")
    return "".join(figures) or "<p>No plots.</p>"


def _delta_note(rows: list[dict]) -> str:
    name = quality_label(rows)
    if name == "top-1 %":
        return "Δ top-1 in percentage points against the unpruned model"
    return f"{name}: the task's test score; Δ in its own units against the unpruned model"


def render(run: Path) -> str:
    """The HTML text of ``run``'s report (plots must already be drawn)."""
    doc = load_result(run)
    cfg = doc.get("config") or {}
    config_file = run / "config.yaml"
    config_text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    env_items = list((read_json(run / "environment.json") or {}).items()) + [
        ("report written", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))]
    title = f"nasprune experiment: {cfg.get('name', run.name)}"
    note = f"<p>{_e(cfg['note'])}</p>" if cfg.get("note") else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
{note}
<p class="muted">Run directory: {_e(run.resolve())}</p>
<h2>Setup</h2>
{_kv_table(_setup(doc, cfg))}
<h2>Results (test split)</h2>
<p class="muted">{_e(_delta_note(doc["rows"]))}; MACs per image,
FLOPs = 2 × MACs; sizes in MB of 2<sup>20</sup> bytes (CSR: sparse storage of threshold
pruning); latency = median forward time at batch 1 and {_e(doc['rows'][0]['latency_batch']
if doc['rows'] else 'N')}, speed-up against the unpruned model timed
in the same interleaved rounds; train s = baseline training
+ extra training + fine-tuning.</p>
{_results_table(doc["rows"])}
<h2>Plots</h2>
{_figures(run)}
<h2>Methods</h2>
{_details(doc["rows"])}
<h2>Resolved config</h2>
<pre>{_e(config_text or json.dumps(cfg, indent=1))}</pre>
<h2>Environment</h2>
{_kv_table(env_items)}
</body></html>
"""


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 draw: bool = True) -> Path:
    """Write ``report.html`` (or ``out``) for the run in ``run_dir``, drawing the plots
    first unless ``draw`` is False (they are then read as they are)."""
    run = Path(run_dir)
    if draw:
        make_plots(run)
    return write_atomic(Path(out) if out else run / "report.html", render(run))


__all__ = ["render", "write_report"]
