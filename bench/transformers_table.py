"""The markdown summary of ``bench/transformers_prune.py``'s stored results: per model and
method, params, test score before/after the fine-tune (mean ± std over seeds), latency, the
delivered layers, and the searched − uniform differences paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MODELS = ("vit", "bert", "llama")
METHODS = ("tp-uniform", "uniform", "minitron", "blocks", "searched")


def _ms(values: list[float], digits: int) -> str:
    """mean ± std (sample std over seeds; the value alone for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def table(out: Path) -> str:
    """Markdown summary of the stored results: one block per model."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*-s*.json"))]
    lines = []
    for model in MODELS:
        rows = [r for r in records if r["model"] == model]
        if not rows:
            continue
        lm = rows[0]["metric"] == "test ppl"
        digits = 1 if lm else 3
        lines += [f"\n**{model}** ({rows[0]['metric']}; params target "
                  f"{rows[0]['target_params']:,} of {rows[0]['base_params']:,})\n",
                  "| method | params (of all / of layers) | seeds | before FT | after FT | "
                  + ("tokens/s (unpruned)" if lm else "speed-up (ms unpruned → pruned)")
                  + " | layers [heads, FFN] (seed 0) |",
                  "|---|---|---:|---:|---:|---:|---|"]
        after = {}
        for method in METHODS:
            rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["seed"])
            if not rs:
                continue
            after[method] = {r["seed"]: r["after"] for r in rs}
            lat = rs[0]["latency"]
            speed = (f"{np.median([r['latency']['tokens_per_s'] for r in rs]):.0f} "
                     f"({lat['base_tokens_per_s']:.0f})" if lm else
                     f"{np.median([r['latency']['speedup'] for r in rs]):.2f}× "
                     f"({lat['base_ms']:.1f} → {np.median([r['latency']['ms'] for r in rs]):.1f})")
            arch = " ".join("–" if a == "dropped" else f"{a[0]}/{a[1]}"
                            for a in rs[0]["architecture"])
            lines.append(f"| {method} | {rs[0]['params']:,} ({rs[0]['params_fraction']:.1%} / "
                         f"{rs[0]['layer_params_fraction']:.1%}) | {len(rs)} | "
                         f"{_ms([r['before'] for r in rs], digits)} | "
                         f"{_ms([r['after'] for r in rs], digits)} | {speed} | {arch} |")
        lines += _paired(after, lm, digits)
    return "\n".join(lines)


def _paired(after: dict, lm: bool, digits: int) -> list[str]:
    """searched − each uniform method, paired by seed (lower ppl / higher top-1 is better)."""
    out = []
    for other in ("tp-uniform", "uniform", "minitron"):
        if "searched" not in after or other not in after:
            continue
        seeds = sorted(set(after["searched"]) & set(after[other]))
        if seeds:
            d = [after["searched"][s] - after[other][s] for s in seeds]
            out.append(f"\nsearched − {other} after FT, paired over seeds {seeds}: "
                       f"{_ms(d, digits)} ({'lower ppl is better' if lm else 'top-1'})")
    return out

