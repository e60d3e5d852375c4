"""The comparison table of an experiment: ``results.json``, ``results.csv``, ``results.md``.

One row per method (and seed): test top-1 and its change against the unpruned model in
percentage points, macro precision/recall/F1, params, MACs (and their fraction of the
unpruned model's), FLOPs (2 × MACs), size in MB (2**20 bytes) — plus sparse MACs and CSR
size for unstructured threshold pruning — latency (median) at batch 1 and batch N with the
speed-up over the unpruned model timed in the same rounds (the unpruned row shows the median
of all those timings), and the seconds spent searching, fine-tuning and training in all
(baseline training + any extra training + fine-tuning).
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from nasprune._io import write_atomic

CSV_COLUMNS = [
    "method", "kind", "seed", "status", "top1", "delta_top1_pp", "score", "delta_score",
    "score_name", "top5", "precision",
    "recall", "f1", "params", "params_fraction", "macs", "macs_fraction", "sparse_macs",
    "sparse_macs_fraction", "flops", "size_mb", "sparse_size_mb", "latency_batch",
    "latency_b1_ms", "latency_bN_ms", "speedup_b1", "speedup_bN", "search_seconds",
    "finetune_seconds", "train_seconds", "wall_seconds", "note", "error",
]


def _median(latency: dict | None, batch: int) -> float | None:
    if not latency:
        return None
    entry = latency.get(str(batch))
    return float(entry["median_ms"]) if entry else None


def _pooled_reference(records: list[dict[str, Any]], batches: tuple[int, ...]) -> dict:
    """Median latency of the unpruned model over all rounds it was timed as a reference."""
    out = {}
    for b in batches:
        vals = [v for rec in records if rec["status"] == "ok"
                for v in ((rec.get("reference_latency") or {}).get(str(b)) or {}).get(
                    "round_medians_ms", []) if rec["kind"] != "unpruned"]
        if vals:
            out[b] = statistics.median(vals)
    return out


def _quality(m: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The quality columns: top-1 (and P/R/F1) on a built-in data set, or a task's score
    and its change against the unpruned model (in the score's own units)."""
    if "top1" in m:
        return {"top1": m["top1"], "top5": m.get("top5"),
                "delta_top1_pp": 100.0 * (m["top1"] - base["top1"]),
                "precision": m["precision"], "recall": m["recall"], "f1": m["f1"]}
    return {"score": m["score"], "delta_score": m["score"] - base["score"]}


def quality_of(row: dict[str, Any]) -> float | None:
    """A row's quality in display units: top-1 in %, a task's score as it is."""
    if row.get("score_name"):
        return row.get("score")
    return None if row.get("top1") is None else 100.0 * row["top1"]


def quality_label(rows: list[dict[str, Any]]) -> str:
    """The quality column's name: ``top-1 %``, or the task's score name with its direction
    (``miou3 ↑``, ``error ↓``)."""
    for r in rows:
        if r.get("score_name"):
            return f"{r['score_name']} {'↑' if r.get('maximize', True) else '↓'}"
    return "top-1 %"


def build_rows(records: list[dict[str, Any]], baseline: dict[str, Any], cfg: Any) -> list[dict]:
    """Flat table rows from the methods' result records (failed ones included)."""
    base = baseline["metrics"]
    n = cfg.latency.batch
    base_b1, base_bn = _median(baseline["latency"], 1), _median(baseline["latency"], n)
    pooled = _pooled_reference(records, (1, n))
    rows = []
    for rec in records:
        row: dict[str, Any] = {c: None for c in CSV_COLUMNS}
        row.update({"method": rec["method"], "kind": rec["kind"], "seed": rec["seed"],
                    "status": rec["status"], "error": rec.get("error"),
                    "wall_seconds": rec.get("wall_seconds"), "latency_batch": n,
                    "dir": rec.get("dir"), "score_name": base.get("score_name"),
                    "maximize": base.get("maximize", True)})
        if rec["status"] == "ok":
            m = rec["metrics"]
            b1, bn = _median(rec["latency"], 1), _median(rec["latency"], n)
            ref = rec.get("reference_latency")  # unpruned, timed in the same rounds
            ref_b1 = _median(ref, 1) if ref else base_b1
            ref_bn = _median(ref, n) if ref else base_bn
            if rec["kind"] == "unpruned":
                # Its best estimate: every time it was timed during the run (as the other
                # methods' reference), not only the once at the start.
                b1, bn = pooled.get(1, b1), pooled.get(n, bn)
                ref_b1, ref_bn = b1, bn
            sparse = rec["kind"] == "threshold"
            row.update(_quality(m, base))
            row.update({
                "params": m["params"], "params_fraction": m["params"] / base["params"],
                "macs": m["macs"], "macs_fraction": m["macs"] / base["macs"],
                "sparse_macs": m["sparse_macs"] if sparse else None,
                "sparse_macs_fraction": m["sparse_macs"] / base["macs"] if sparse else None,
                "flops": m["flops"], "size_mb": m["size_mb"],
                "sparse_size_mb": m["sparse_size_mb"] if sparse else None,
                "latency_b1_ms": b1, "latency_bN_ms": bn,
                "speedup_b1": ref_b1 / b1 if b1 and ref_b1 else None,
                "speedup_bN": ref_bn / bn if bn and ref_bn else None,
                "search_seconds": rec["search_seconds"],
                "finetune_seconds": rec["finetune_seconds"],
                "train_seconds": rec["train_seconds"],
                "note": (rec.get("info") or {}).get("note"),
                "kept": rec.get("kept"),
                "ratios": (rec.get("info") or {}).get("ratios"),
                "info": rec.get("info"),
            })
        rows.append(row)
    return rows


# ---- formatting ----------------------------------------------------------------------------

def _f(v: Any, fmt: str, scale: float = 1.0) -> str:
    if v is None:
        return "—"
    return format(v * scale if scale != 1.0 else v, fmt)


def _cell(text: Any) -> str:
    """Markdown-safe table cell: no pipes or line breaks from names and messages."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


HEADER = ["method", "top-1 %", "Δ top-1 (pp)", "precision", "recall", "F1", "params",
          "MACs (M)", "MACs %", "sparse MACs %", "FLOPs (M)", "size MB", "CSR MB",
          "b1 ms", "b1 ×", "bN ms", "bN ×", "search s", "fine-tune s", "train s"]


def _label(row: dict, several_seeds: bool) -> str:
    return f"{row['method']} (seed {row['seed']})" if several_seeds else str(row["method"])


def table_cells(row: dict, several_seeds: bool = False) -> list[str]:
    """One row's cells in :data:`HEADER` order (shared by Markdown and HTML)."""
    label = _label(row, several_seeds)
    if row["status"] != "ok":
        return [label, "failed"] + ["—"] * (len(HEADER) - 2)
    if row.get("score_name"):
        quality = [_f(row["score"], ".4f"), _f(row["delta_score"], "+.4f")]
    else:
        quality = [_f(row["top1"], ".2f", 100), _f(row["delta_top1_pp"], "+.2f")]
    return [
        label, *quality,
        _f(row["precision"], ".3f"), _f(row["recall"], ".3f"), _f(row["f1"], ".3f"),
        _f(row["params"], ",d"), _f(row["macs"], ".3f", 1e-6),
        _f(row["macs_fraction"], ".1f", 100), _f(row["sparse_macs_fraction"], ".1f", 100),
        _f(row["flops"], ".3f", 1e-6), _f(row["size_mb"], ".4f"),
        _f(row["sparse_size_mb"], ".4f"), _f(row["latency_b1_ms"], ".3f"),
        _f(row["speedup_b1"], ".2f"), _f(row["latency_bN_ms"], ".3f"),
        _f(row["speedup_bN"], ".2f"), _f(row["search_seconds"], ".1f"),
        _f(row["finetune_seconds"], ".1f"), _f(row["train_seconds"], ".1f"),
    ]


def header(rows: list[dict]) -> list[str]:
    n = rows[0]["latency_batch"] if rows else "N"
    head = [h.replace("bN", f"b{n}") for h in HEADER]
    name = quality_label(rows)
    if name != HEADER[1]:  # a task's score, in its own units
        head[1], head[2] = name, f"Δ {name.split()[0]}"
    return head


def seed_summary(rows: list[dict]) -> list[tuple[str, int, float, float]]:
    """``(method, runs, mean, std)`` of the quality (:func:`quality_of`: top-1 in %, or a
    task's score) over seeds for methods that finished."""
    by: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            by.setdefault(str(r["method"]), []).append(float(quality_of(r)))
    return [(m, len(v), statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
            for m, v in by.items()]


def summary_format(rows: list[dict]) -> str:
    """Format of the seed summary's numbers: 2 decimals of %, 4 digits of a task's score."""
    return ".2f" if quality_label(rows) == HEADER[1] else ".4g"


def to_markdown(rows: list[dict], baseline: dict | None = None) -> str:
    """The comparison as a Markdown table, failures and notes listed below it."""
    several = len({r["seed"] for r in rows}) > 1
    head = header(rows)
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(c) for c in table_cells(r, several)) + " |")
    if several:
        lines += ["", f"| method | runs | mean {quality_label(rows)} | std |",
                  "|---|--:|--:|--:|"]
        fmt = summary_format(rows)
        for m, k, mean, std in seed_summary(rows):
            lines.append(f"| {_cell(m)} | {k} | {mean:{fmt}} | {std:{fmt}} |")
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed:"]
        lines += [f"- {_cell(_label(r, several))}: {_cell(r['error'])}" for r in failed]
    notes = [r for r in rows if r["status"] == "ok" and r.get("note")]
    if notes:
        lines += ["", "Notes:"]
        lines += [f"- {_cell(_label(r, several))}: {_cell(r['note'])}" for r in notes]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def write_tables(run: Path, rows: list[dict], baseline: dict, cfg: Any) -> dict[str, Path]:
    """``results.json``, ``results.csv`` and ``results.md`` in ``run`` (each atomic)."""
    import json

    from nasprune.config import to_dict

    doc = {
        "config": to_dict(cfg),
        "budget_macs_fraction": cfg.budget,
        "baseline": {k: baseline[k] for k in ("metrics", "latency", "train_seconds", "source",
                                              "kept", "groups") if k in baseline},
        "rows": rows,
    }
    return {
        "json": write_atomic(run / "results.json", json.dumps(doc, indent=1, default=str)),
        "csv": write_atomic(run / "results.csv", to_csv(rows)),
        "md": write_atomic(run / "results.md", to_markdown(rows, baseline)),
    }


__all__ = ["CSV_COLUMNS", "HEADER", "build_rows", "header", "quality_label", "quality_of",
           "seed_summary", "summary_format", "table_cells",
           "to_csv", "to_markdown", "write_tables"]
