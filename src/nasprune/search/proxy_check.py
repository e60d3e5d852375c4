"""How well does the proxy rank candidates? Its Spearman correlation with briefly
fine-tuned accuracy (``nasprune search --check-proxy``), per rung where it has rungs."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.search.proxy import Proxy


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan if either side is constant."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def check_proxy(evaluator: Proxy, candidates: Sequence[dict[str, float]],
                finetune_epochs: float = 1, teacher: nn.Module | None = None,
                **finetune_kw) -> dict:
    """Rank agreement of the proxy with briefly fine-tuned accuracy, on ``candidates``.

    Each candidate is scored by ``evaluator`` and, separately, pruned and fine-tuned for
    ``finetune_epochs`` (``nasprune.finetune``) then measured on the same validation
    subset. Returns ``spearman`` (rank correlation), ``proxy`` and ``finetuned`` scores,
    ``n`` and the seconds spent. A proxy with rungs scores every candidate at every rung
    (none stops early here) and adds ``rungs``: per rung its ``val_size``,
    ``finetune_steps``, ``scores`` and ``spearman``; ``proxy``/``spearman`` are then the
    top rung's (what a search picks by).
    """
    from nasprune.task import is_dataset
    from nasprune.train import finetune

    if len(candidates) < 2:
        raise NaspruneError("check_proxy needs at least 2 candidates")
    epochs = max(1, int(math.ceil(finetune_epochs)))
    kw = {"progress": False, "seed": evaluator.seed, "device": evaluator.device}
    kw.update(finetune_kw)
    if finetune_epochs < 1 and "max_steps" not in kw:
        data = evaluator.data
        steps_per_epoch = max(1, len(data.train) // kw.get("batch_size", 128)
                              if is_dataset(data) else len(evaluator.task.split("train")))
        kw["max_steps"] = max(1, int(finetune_epochs * steps_per_epoch))
    start = time.perf_counter()
    proxy, tuned = [], []
    levels = evaluator.rungs.levels if evaluator.rungs is not None else ()
    per_rung: list[list[float]] = [[] for _ in levels]
    for ratios in candidates:
        if levels:
            for scores, value in zip(per_rung, evaluator.rung_scores(ratios), strict=True):
                scores.append(value)
            proxy.append(per_rung[-1][-1])
        else:
            proxy.append(evaluator.score(ratios))
        pruned = evaluator.prune(ratios)
        finetune(pruned, evaluator.data, epochs=epochs, teacher=teacher, **kw)
        pruned.to(evaluator.device)
        tuned.append(evaluator.accuracy(pruned))
    out = {
        "spearman": spearman(proxy, tuned),
        "proxy": proxy,
        "finetuned": tuned,
        "n": len(candidates),
        "finetune_epochs": finetune_epochs,
        "seconds": time.perf_counter() - start,
    }
    if levels:
        out["rungs"] = [{"val_size": r.val_size, "finetune_steps": r.finetune_steps,
                         "scores": scores, "spearman": spearman(scores, tuned)}
                        for r, scores in zip(levels, per_rung, strict=True)]
    return out


__all__ = ["check_proxy", "spearman"]
