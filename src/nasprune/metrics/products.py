"""Products of two activations: attention scores (``Q·Kᵀ``) and attention·V.

Transformers written with ``F.scaled_dot_product_attention`` or eager ``torch.matmul``
(Hugging Face BERT, GPT-2, Llama, timm ViT) spend MACs outside any layer with a weight, so
module hooks cannot see them. :func:`recording_products` watches the torch functions of one
forward pass (a ``TorchFunctionMode``) and records each such product with the names of the
modules it ran in. Counted once, never twice:

* only products of two activations: an operand that is an ``nn.Parameter`` marks a layer's
  own arithmetic (Conv1D's ``addmm``, a custom ``x @ self.weight``), which is not counted;
* nothing while a counted module runs (Linear, conv, Conv1D, ``nn.MultiheadAttention``,
  whose own formula already includes its two attention matmuls);
* outer products (inner dimension 1, e.g. a rotary-embedding table) are not MACs.

A network without such products (every CNN) counts exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
            torch.Tensor.bmm}
_ADD_MATMULS = {torch.baddbmm, torch.Tensor.baddbmm}  # (bias, a, b): product of a and b


@dataclass
class Product:
    """One activation product: its MACs and the modules it ran in (outermost first)."""

    macs: int
    stack: tuple[str, ...]

    @property
    def owner(self) -> str:
        """The innermost module it ran in ("" for the model itself)."""
        return self.stack[-1] if self.stack else ""


def _matmul_macs(a: torch.Tensor, b: torch.Tensor, out: object) -> int:
    """MACs of ``a @ b`` (broadcast batch dims included): output elements × inner dim."""
    inner = a.shape[-1] if a.dim() else 1
    if inner <= 1 or not isinstance(out, torch.Tensor):
        return 0  # an outer product or a scalar: no accumulation
    return int(out.numel() * inner)


def _sdpa_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """``Q·Kᵀ`` and attention·V per query head: a key/value head shared by several query
    heads (grouped-query attention) is multiplied once per query head."""
    rows = math.prod(q.shape[:-1])  # batch · query heads · query length
    return int(rows * k.shape[-2] * (q.shape[-1] + v.shape[-1]))


def _is_param(x: object) -> bool:
    return isinstance(x, nn.Parameter)


class _Recorder(TorchFunctionMode):
    """Records activation products while no counted module is running."""

    def __init__(self, stack: list[str], busy: list[int], found: list[Product]) -> None:
        super().__init__()
        self.stack, self.busy, self.found = stack, busy, found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.busy[0]:
            macs = _macs(func, args, kwargs, out)
            if macs:
                self.found.append(Product(macs, tuple(self.stack)))
        return out


def _macs(func, args: tuple, kwargs: dict, out: object) -> int:
    """MACs of one torch call if it is an activation product, else 0."""
    if func is F.scaled_dot_product_attention:
        q = args[0] if args else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        v = args[2] if len(args) > 2 else kwargs["value"]
        return _sdpa_macs(q, k, v)
    if func in _MATMULS or func in _ADD_MATMULS:
        a, b = (args[1], args[2]) if func in _ADD_MATMULS else (args[0], args[1])
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) \
                and not (_is_param(a) or _is_param(b)):
            return _matmul_macs(a, b, out)
    return 0


@contextmanager
def recording_products(model: nn.Module, counted: set[int]) -> Iterator[list[Product]]:
    """Record the activation products of whatever ``model`` runs inside the block.

    ``counted`` holds the ids of the modules whose own formulas count their work: nothing
    inside them is recorded.
    """
    stack: list[str] = []
    busy = [0]
    found: list[Product] = []
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue

        def pre(mod, args, name=name) -> None:
            stack.append(name)
            busy[0] += id(mod) in counted

        def post(mod, args, out) -> None:
            stack.pop()
            busy[0] -= id(mod) in counted

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with _Recorder(stack, busy, found):
            yield found
    finally:
        for h in handles:
            h.remove()


__all__ = ["Product", "recording_products"]
