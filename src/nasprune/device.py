"""The one place a device argument becomes a ``torch.device``.

Training, evaluation, latency measurement and the search proxy all take ``device`` as a
string, a ``torch.device`` or None, and must agree on what None means and on the errors.
"""

from __future__ import annotations

import torch

from nasprune.errors import NaspruneError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device; unknown or unavailable devices are NaspruneErrors.

    ``None`` means "the best there is": CUDA when available, else CPU. Callers that want
    None to mean something else (the model's own device, say) decide that before calling.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise NaspruneError(f"unknown device '{device}': use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NaspruneError(f"device '{device}' requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise NaspruneError(f"device '{device}' does not exist: "
                            f"{torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise NaspruneError(f"unsupported device '{device}': use cpu, cuda or cuda:N")
    return dev


__all__ = ["resolve_device"]
