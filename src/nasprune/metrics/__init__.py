"""Metrics: accuracy, precision/recall/F1, mIoU, perplexity, MACs/FLOPs/params, size in MB, latency, timing.

FLOPs are reported as 2 × MACs throughout; see :mod:`nasprune.metrics.cost` for exactly
which operations the MACs count.
"""

from __future__ import annotations

from nasprune.metrics.classification import accuracy, classification_report, confusion_matrix
from nasprune.metrics.cost import (
    LayerCost,
    count_flops,
    count_macs,
    count_params,
    layer_costs,
    layer_macs,
    sparse_macs,
)
from nasprune.metrics.evaluate import evaluate, model_device, predict
from nasprune.metrics.language import negative_perplexity
from nasprune.metrics.latency import measure_latency, resolve_device
from nasprune.metrics.mode import eval_mode
from nasprune.metrics.segmentation import miou
from nasprune.metrics.size import (
    csr_bytes,
    model_size_bytes,
    model_size_mb,
    sparse_size_bytes,
    sparse_size_mb,
    weight_sparsity,
)
from nasprune.metrics.summary import format_summary, summarize, write_json
from nasprune.metrics.timing import Timer

__all__ = [
    "LayerCost",
    "Timer",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "count_flops",
    "count_macs",
    "count_params",
    "csr_bytes",
    "eval_mode",
    "evaluate",
    "format_summary",
    "layer_costs",
    "layer_macs",
    "measure_latency",
    "miou",
    "model_device",
    "model_size_bytes",
    "model_size_mb",
    "negative_perplexity",
    "predict",
    "resolve_device",
    "sparse_macs",
    "sparse_size_bytes",
    "sparse_size_mb",
    "summarize",
    "weight_sparsity",
    "write_json",
]
