"""PNG plots of an experiment run, drawn from the files in its run directory.

* ``accuracy_vs_macs.png`` — test top-1 against MACs for every method (threshold pruning at
  its sparse MACs), the budget as a line, and the Pareto front of any multi-objective
  search behind them (its proxy score: validation top-1 after BatchNorm recalibration,
  before fine-tuning).
* ``kept_channels.png`` — channels each group keeps, per structured method.
* ``search_progress.png`` — best proxy score so far against trial, per search.
* ``sensitivity.png`` — validation top-1 against prune ratio, per group.

Matplotlib's object API with the Agg canvas is used directly: no global backend switch, no
display needed. A plot without data (no search, no sensitivity run) is not written.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from nasprune._io import read_json, write_atomic
from nasprune.report.results import load_result

PLOTS = ("accuracy_vs_macs", "accuracy_vs_latency", "kept_channels", "search_progress",
         "sensitivity")


def _figure(width: float = 8.0, height: float = 5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list:
    """``n`` distinguishable colours: the default cycle, tab20 beyond ten."""
    from matplotlib import colormaps

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_atomic(path, buf.getvalue())


def _read(path: Path) -> Any:
    return read_json(path)


def _label(row: dict, several: bool) -> str:
    return f"{row['method']} (seed {row['seed']})" if several else str(row["method"])


def _axis(doc: dict) -> tuple[float, str, bool]:
    """``(scale, name, maximize)`` of the quality axis: top-1 in %, or a task's score."""
    m = doc["baseline"]["metrics"]
    if "top1" in m:
        return 100.0, "top-1 accuracy (%)", True
    return 1.0, str(m.get("score_name", "score")), bool(m.get("maximize", True))


def accuracy_vs_macs(doc: dict, run: Path) -> Any | None:
    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    if not rows:
        return None
    several = len({r["seed"] for r in doc["rows"]}) > 1
    base_macs = doc["baseline"]["metrics"]["macs"]
    scale, name, _ = _axis(doc)
    fig = _figure(10.0, 5.5)
    ax = fig.subplots()
    for r in doc["rows"]:
        search = _read(run / "methods" / str(r.get("dir")) / "search.json") \
            if r["status"] == "ok" and r["kind"].startswith("nas:") else None
        front = (search or {}).get("pareto") or []
        if front:
            pts = sorted((c["macs"] / 1e6, scale * c["score"]) for c in front)
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", alpha=0.35,
                    marker=".", label=f"Pareto front of {_label(r, several)} (proxy score)")
    markers = "oDs^v<>pPhXd"
    colors = _colors(len(rows))
    for i, r in enumerate(rows):
        sparse = r["kind"] == "threshold"
        x = (r["sparse_macs"] if sparse else r["macs"]) / 1e6
        label = _label(r, several) + (" (sparse MACs)" if sparse else "")
        star = r["kind"] == "unpruned"
        y = r["top1"] if "top1" in doc["baseline"]["metrics"] else r["score"]
        ax.scatter([x], [scale * y], s=90 if star else 55, zorder=3,
                   marker="*" if star else markers[i % len(markers)],
                   facecolors="none" if sparse else None,
                   edgecolors=colors[i], color=colors[i], label=label)
    ax.axvline(doc["budget_macs_fraction"] * base_macs / 1e6, color="grey", ls="--", lw=1,
               label=f"budget ({doc['budget_macs_fraction']:.0%} of the unpruned MACs)")
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel(f"test {name}")
    ax.set_title(f"{name.split()[0]} vs MACs after the same fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def accuracy_vs_latency(doc: dict, run: Path) -> Any | None:
    """Test top-1 against measured batch-1 latency (what the deployment pays per image)."""
    rows = [r for r in doc["rows"] if r["status"] == "ok" and r.get("latency_b1_ms")]
    if not rows:
        return None
    several = len({r["seed"] for r in doc["rows"]}) > 1
    runtime = ((doc.get("config") or {}).get("latency") or {}).get("runtime", "torch")
    fig = _figure(10.0, 5.5)
    ax = fig.subplots()
    markers = "oDs^v<>pPhXd"
    colors = _colors(len(rows))
    for i, r in enumerate(rows):
        star = r["kind"] == "unpruned"
        speed = f", {r['speedup_b1']:.2f}x" if r.get("speedup_b1") else ""
        ax.scatter([r["latency_b1_ms"]], [100 * r["top1"]], s=90 if star else 55, zorder=3,
                   marker="*" if star else markers[i % len(markers)], color=colors[i],
                   label=f"{_label(r, several)}{speed}")
    ax.set_xlabel(f"measured latency, batch 1, {runtime} (ms, median)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("Accuracy vs measured latency after the same fine-tuning")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def kept_channels(doc: dict, run: Path) -> Any | None:
    groups = doc["baseline"].get("groups") or []
    rows = [r for r in doc["rows"] if r["status"] == "ok" and r.get("kept")
            and r["kind"] != "unpruned"]
    if not groups or not rows:
        return None
    several = len({r["seed"] for r in doc["rows"]}) > 1
    names = [g["name"] for g in groups]
    xs = list(range(len(names)))
    fig = _figure(max(10.0, 0.45 * len(names) + 5), 5.5)
    ax = fig.subplots()
    ax.bar(xs, [g["channels"] for g in groups], color="0.85", label="unpruned")
    colors = _colors(len(rows))
    for i, r in enumerate(rows):
        ax.plot(xs, [r["kept"].get(n, 0) for n in names], marker="o", ms=4, lw=1.2,
                color=colors[i], label=_label(r, several))
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("channel group (its first layer)")
    ax.set_ylabel("kept channels (count)")
    ax.set_title("Channels kept per group (threshold pruning keeps all: not shown)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def search_progress(doc: dict, run: Path) -> Any | None:
    several = len({r["seed"] for r in doc["rows"]}) > 1
    scale, name, maximize = _axis(doc)
    series = []
    for r in doc["rows"]:
        if r["status"] != "ok" or not r["kind"].startswith("nas:"):
            continue
        search = _read(run / "methods" / str(r.get("dir")) / "search.json") or {}
        cands = sorted(search.get("candidates") or [], key=lambda c: c["number"])
        if cands:
            series.append((_label(r, several), [scale * c["score"] for c in cands]))
    if not series:
        return None
    fig = _figure()
    ax = fig.subplots()
    colors = _colors(len(series))
    for i, (label, scores) in enumerate(series):
        best, run_best = [], scores[0]
        for s in scores:
            run_best = max(run_best, s) if maximize else min(run_best, s)
            best.append(run_best)
        xs = list(range(1, len(scores) + 1))
        ax.scatter(xs, scores, s=8, alpha=0.3, color=colors[i])
        ax.plot(xs, best, color=colors[i], lw=1.8, label=label)
    ax.set_xlabel("trial (completed, in order)")
    ax.set_ylabel(f"proxy score: validation {name}")
    ax.set_title("Search progress: best score so far (line) and each trial (dots)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def sensitivity(doc: dict, run: Path) -> Any | None:
    table = None
    for r in doc["rows"]:
        if r["status"] == "ok" and r["kind"] == "sensitivity":
            table = _read(run / "methods" / str(r.get("dir")) / "sensitivity.json")
            if table:
                break
    if not table or not table.get("curves"):
        return None
    scale, name, _ = _axis(doc)
    fig = _figure()
    ax = fig.subplots()
    colors = _colors(len(table["curves"]))
    for i, (group, curve) in enumerate(table["curves"].items()):
        ax.plot([100 * lv for lv, _ in curve], [scale * acc for _, acc in curve], marker="o",
                ms=3, lw=1.2, color=colors[i], ls="-" if i % 2 == 0 else "--", label=group)
    ax.axhline(scale * table["baseline"], color="grey", ls=":", lw=1, label="unpruned")
    ax.set_xlabel("channels removed from the group (%)")
    ax.set_ylabel(f"validation {name}")
    ax.set_title(f"Sensitivity: one group pruned at a time ({table.get('criterion', 'l1')}, "
                 "BatchNorm recalibrated)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(table["curves"]) > 8 else 1)
    return fig


_DRAW = {"accuracy_vs_macs": accuracy_vs_macs, "accuracy_vs_latency": accuracy_vs_latency,
         "kept_channels": kept_channels,
         "search_progress": search_progress, "sensitivity": sensitivity}


def make_plots(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Draw every plot the run has data for into ``<run>/plots/``; returns name → path."""
    run = Path(run_dir)
    doc = load_result(run)
    out: dict[str, Path] = {}
    for name in PLOTS:
        fig = _DRAW[name](doc, run)
        path = run / "plots" / f"{name}.png"
        if fig is None:
            path.unlink(missing_ok=True)  # stale from an earlier run with that data
            continue
        out[name] = _save(fig, path)
    return out


__all__ = ["PLOTS", "make_plots"]
