"""Several finished ``bench/peers.py`` runs (one per seed) as one table: mean ± spread per
method and paired differences against the references, seed by seed.

Runs on one machine are noisy and seeds change the fine-tune's data order and every search,
so a gap between two methods means something only against its own spread: the paired
difference (method − reference on the same seed, same data order) removes what the seeds
share, and "ahead on k of n" says how often the method won.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REFERENCES = ("tp-global", "fastnas")


def _mean_sd(values: Sequence[float], sign: str = "") -> str:
    """``mean ± sample std`` in percent (points) (``mean`` alone for one value)."""
    m = f"{100 * statistics.fmean(values):{sign}.2f}"
    return m if len(values) < 2 else f"{m} ± {100 * statistics.stdev(values):.2f}"


def _mean(rows: list[dict], key: str, scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    vals = [row[key] for row in rows if row.get(key) is not None]
    return fmt.format(scale * statistics.fmean(vals)) if vals else "—"


def paired(runs: list[dict[str, dict]], method: str, reference: str) -> str:
    """``mean ± std`` of the per-run top-1 differences (pp) and how many runs it led."""
    both = [r for r in runs if method in r and reference in r]
    if not both or method == reference:
        return "—"
    diffs = [r[method]["top1"] - r[reference]["top1"] for r in both]
    ahead = sum(d > 0 for d in diffs)
    return f"{_mean_sd(diffs, '+')} ({ahead}/{len(diffs)})"


def combine_runs(runs: list[dict[str, dict]], names: list[str],
                 references: Sequence[str] = REFERENCES) -> str:
    """The Markdown table over ``runs`` (each: method -> peers row), named ``names``."""
    methods: list[str] = []
    for r in runs:
        methods += [m for m in r if m not in methods]
    refs = [ref for ref in references if any(ref in r for r in runs)]
    head = ["method", *[f"top-1 % ({n})" for n in names], "mean ± std",
            *[f"vs `{ref}` pp (ahead)" for ref in refs], "proxy % (mean)", "MACs %",
            "params %", "search s", "search CPU s", "fine-tune s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in methods:
        rows = [r[m] for r in runs if m in r]
        proxies = [row["proxy"] for row in rows if row.get("proxy") is not None]

        cells = [f"`{m}`", *[f"{100 * r[m]['top1']:.2f}" if m in r else "—" for r in runs],
                 _mean_sd([row["top1"] for row in rows]),
                 *[paired(runs, m, ref) for ref in refs],
                 f"{100 * statistics.fmean(proxies):.1f}" if proxies else "—",
                 _mean(rows, "macs_fraction", 100), _mean(rows, "params_fraction", 100),
                 _mean(rows, "search_seconds", fmt="{:.0f}"),
                 _mean([row.get("info") or {} for row in rows], "search_cpu_seconds",
                       fmt="{:.0f}"),
                 _mean(rows, "finetune_seconds", fmt="{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_runs(dirs: Sequence[str | Path], read: Any) -> list[dict[str, dict]]:
    """Each directory's ``peers.json`` rows by method (``read`` returns None when absent)."""
    from nasprune.errors import NaspruneError

    runs = []
    for d in dirs:
        doc = read(Path(d) / "peers.json")
        if not isinstance(doc, dict) or "rows" not in doc:
            raise NaspruneError(f"'{d}' holds no peers.json: run bench/peers.py there first")
        runs.append({r["method"]: r for r in doc["rows"]})
    return runs
