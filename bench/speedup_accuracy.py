"""Issue 12's accuracy side: networks asked for a speed-up beside MACs-budgeted ones.

Reads the ``bench/peers.py`` runs of one protocol per seed and prints one Markdown table:
per method, test top-1 after the same fine-tune, MACs, and the speed-up over the unpruned
model measured by the experiment on its latency runtime (batch 1 and 128), per seed and
as mean ± std, with the paired difference to a reference row. The runs (per seed S)::

    # the speed-up rows, on ONNX Runtime (1 thread), no MACs limit
    bench/peers.py --checkpoint ../shared/baselines/resnet20-cifar10 \\
        --data-dir ../shared/data/cifar10-jpg.tar.gz --full-train --finetune-epochs 1 \\
        --trials 100 --seed S --threads 1 --latency-runtime onnxruntime --budget 1 \\
        --methods nas:bayes@2x,nas:bayes@2x@blocks --out runs/peers/r20-2x-ort-sS
    # MACs-budgeted rows at the MACs nas:bayes@2x kept (F), same runtime
    bench/peers.py ... --budget F --methods nas:bayes,tp-global --out runs/peers/r20-2x-ort-sS-macs

Usage: ``python bench/speedup_accuracy.py runs/peers/r20-2x-ort-s0 runs/peers/r20-2x-ort-s1``
(each directory with its ``-macs`` sibling).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REFERENCE = "nas:bayes"


def rows_of(run: Path) -> dict[str, dict]:
    """Every method row of ``run`` and of its ``-macs`` sibling, by method name."""
    out = {}
    for d in (run, run.with_name(run.name + "-macs")):
        if (d / "peers.json").exists():
            doc = json.loads((d / "peers.json").read_text(encoding="utf-8"))
            out.update({r["method"]: r for r in doc["rows"] if r.get("status") == "ok"})
    return out


def _mean_std(values: list[float], sign: str = "") -> str:
    if len(values) < 2:
        return f"{values[0]:{sign}.2f}"
    return f"{statistics.mean(values):{sign}.2f} ± {statistics.stdev(values):.2f}"


def table(runs: list[Path]) -> str:
    seeds = [rows_of(r) for r in runs]
    methods = [m for m in seeds[0] if all(m in s for s in seeds)]
    head = ["method", *(f"top-1 % ({r.name})" for r in runs), "mean", f"vs `{REFERENCE}` pp",
            "MACs %", "speed-up b1", "speed-up b128"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in methods:
        top1 = [100 * s[m]["top1"] for s in seeds]
        diff = [100 * (s[m]["top1"] - s[REFERENCE]["top1"]) for s in seeds if REFERENCE in s]
        cells = [f"`{m}`", *(f"{t:.2f}" for t in top1), _mean_std(top1),
                 "—" if m == REFERENCE or not diff else _mean_std(diff, "+"),
                 _mean_std([100 * s[m]["macs_fraction"] for s in seeds]),
                 _mean_std([s[m]["speedup_b1"] for s in seeds]) + "x",
                 _mean_std([s[m]["speedup_bN"] for s in seeds]) + "x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    print(table([Path(a) for a in argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
