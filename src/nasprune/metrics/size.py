"""Storage size of a model in MB (2**20 bytes): dense fp32 and CSR-compressed sparse.

What is counted is what a checkpoint stores: every parameter and every persistent buffer
(BatchNorm running statistics, ``num_batches_tracked``), each shared tensor once.
Floating-point tensors count 4 bytes per element whatever their current dtype (the fp32
size, so a half-precision copy reports the same number); integer and bool buffers count
their own element size. Pruning masks (``nasprune_mask`` buffers) are excluded: they are
training bookkeeping, and the deployable model is the weights with their zeros
(``pruning.masks.remove_masks``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from nasprune.pruning.masks import MASK

MB = 2**20
FP32 = 4
INDEX = 4  # int32 column indices and row pointers


def _dense_bytes(t: torch.Tensor) -> int:
    per = FP32 if t.is_floating_point() else t.element_size()
    return t.numel() * per


def _stored_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """``(name, tensor, is_parameter)`` for each stored tensor, shared ones once."""
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            yield name, p, True
    for mod_name, m in model.named_modules():
        for b_name, b in m._buffers.items():
            if b is None or b_name == MASK or b_name in m._non_persistent_buffers_set:
                continue
            if id(b) not in seen:
                seen.add(id(b))
                yield f"{mod_name}.{b_name}" if mod_name else b_name, b, False


def csr_bytes(weight: torch.Tensor) -> int:
    """Bytes of ``weight`` stored as CSR with the tensor viewed as ``(shape[0], rest)``.

    fp32 values and int32 column indices for each non-zero, plus ``rows + 1`` int32 row
    pointers.
    """
    nnz = int(torch.count_nonzero(weight.detach()).item())
    rows = weight.shape[0]
    return nnz * (FP32 + INDEX) + (rows + 1) * INDEX


def model_size_bytes(model: nn.Module) -> int:
    """Dense fp32 bytes of the parameters and persistent buffers."""
    return sum(_dense_bytes(t) for _, t, _ in _stored_tensors(model))


def model_size_mb(model: nn.Module) -> float:
    """Dense fp32 size in MB (2**20 bytes) of what a checkpoint stores; see the module doc."""
    return model_size_bytes(model) / MB


def sparse_size_bytes(model: nn.Module) -> int:
    """Bytes with every ≥2-D floating parameter in CSR (:func:`csr_bytes`), the rest dense."""
    total = 0
    for _, t, is_param in _stored_tensors(model):
        if is_param and t.dim() >= 2 and t.is_floating_point():
            total += csr_bytes(t)
        else:
            total += _dense_bytes(t)
    return total


def sparse_size_mb(model: nn.Module) -> float:
    """Size in MB of a CSR-compressed copy: what unstructured sparsity saves on disk.

    CSR costs 8 bytes per non-zero against 4 per dense entry, so it only pays off above
    50 % sparsity; on a dense model this is larger than :func:`model_size_mb`.
    """
    return sparse_size_bytes(model) / MB


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all ≥2-D floating parameters (the prunable weights)."""
    zeros = total = 0
    for _, t, is_param in _stored_tensors(model):
        if is_param and t.dim() >= 2 and t.is_floating_point():
            total += t.numel()
            zeros += t.numel() - int(torch.count_nonzero(t.detach()).item())
    return zeros / total if total else 0.0
