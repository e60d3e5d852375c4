"""Where and how to train: device, mixed precision and memory format, auto-chosen for CUDA.

``resolve_device`` lives in :mod:`nasprune.device` (shared with metrics and search).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nasprune.device import resolve_device  # re-exported: train code imports it from here
from nasprune.errors import NaspruneError


@dataclass(frozen=True)
class Precision:
    """Autocast settings: ``dtype`` None means full fp32; fp16 also needs a GradScaler."""

    dtype: torch.dtype | None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None)


def resolve_precision(amp: bool | str | None, device: torch.device) -> Precision:
    """``None`` → bf16 on CUDA GPUs that support it (else fp16), fp32 on CPU."""
    if amp is None:
        if device.type != "cuda":
            return Precision(None)
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if amp is False:
        return Precision(None)
    if amp is True:
        amp = "bf16" if device.type != "cuda" or torch.cuda.is_bf16_supported() else "fp16"
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    if amp not in table:
        raise NaspruneError(f"amp must be True, False, 'bf16', 'fp16' or 'fp32', got {amp!r}")
    if amp == "fp16" and device.type == "cpu":
        raise NaspruneError("amp='fp16' needs a CUDA device; use 'bf16' on CPU")
    return Precision(table[amp])


def resolve_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """channels_last speeds up convs on CUDA tensor cores; on CPU it rarely helps."""
    return device.type == "cuda" if channels_last is None else bool(channels_last)


__all__ = ["Precision", "resolve_channels_last", "resolve_device", "resolve_precision"]
