"""Weight masks for unstructured pruning that survive fine-tuning.

A masked layer carries a ``nasprune_mask`` buffer beside its weight. ``apply_masks`` zeroes
the masked weights again; the training loop calls it after every optimizer step, so momentum
or Adam's running averages can never revive a pruned weight.
"""

from __future__ import annotations

import torch
from torch import nn

MASK = "nasprune_mask"


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Attach (or replace) the mask of ``module.weight`` and apply it."""
    mask = mask.to(dtype=torch.bool, device=module.weight.device)
    if hasattr(module, MASK) and MASK in module._buffers:
        module._buffers[MASK] = mask
    else:
        module.register_buffer(MASK, mask)
    with torch.no_grad():
        module.weight.mul_(mask)


def masked_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if MASK in m._buffers]


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Re-zero every masked weight (a no-op for models without masks)."""
    for _, m in masked_modules(model):
        m.weight.mul_(m._buffers[MASK])


def remove_masks(model: nn.Module) -> None:
    """Drop the mask buffers, keeping the zeros already in the weights."""
    apply_masks(model)
    for _, m in masked_modules(model):
        del m._buffers[MASK]
