"""Where each layer's output goes: to other layers, to the model's outputs, or nowhere traced.

DepGraph ties channels together by tracing, and knows nothing of what happens to a layer's
output after the model returns it or hands it to code it does not follow. Models that
return lists or dicts (torchvision detection: boxes decoded from ``bbox_pred``, scores from
``cls_score``; the RPN's ``cls_logits``/``bbox_pred`` are detached before proposals are
drawn) have output layers that the "last layer that ran" rule misses, and a layer shared
by several inputs (the RPN head's conv over every FPN level) can be tied to only some of
its producers. One forward pass with autograd answers all of it: walking back from a
tensor's ``grad_fn`` until a conv/linear output is met names the layers whose channels
reach that tensor without passing through another prunable layer.

- **heads**: layers whose output reaches a model output that way, and layers whose output
  feeds no other prunable layer (it goes to code outside the traced graph): their output
  channels are the model's interface and are never pruned;
- **untied**: layers whose channels feed a layer that runs several times (a head shared
  by every pyramid level) which DepGraph did not tie to them. DepGraph can tie a shared
  layer to only some of its inputs; cutting such a group would leave the shared layer
  expecting the old width on the others, so the group is refused instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Flow:
    """What one traced forward pass says about the prunable layers of a model."""

    heads: list[nn.Module] = field(default_factory=list)
    consumers: dict[nn.Module, set[nn.Module]] = field(default_factory=dict)
    shared: set[nn.Module] = field(default_factory=set)  # layers that ran more than once

    def untied(self, out_layers: list[nn.Module], members: set[nn.Module]) -> list[nn.Module]:
        """Shared layers fed by ``out_layers`` that are not among a group's ``members``."""
        return [c for m in out_layers for c in self.consumers.get(m, ())
                if c in self.shared and c not in members]


def tensors_in(out: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) model output: a tensor, a list/tuple or a dict of them."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in tensors_in(o)]
    return []


def _producers(start: Any, made_by: dict[Any, nn.Module]) -> set[nn.Module]:
    """Prunable layers reached walking back from autograd node ``start``, not past them."""
    found: set[nn.Module] = set()
    seen: set[Any] = set()
    stack = [start]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        layer = made_by.get(node)
        if layer is not None:
            found.add(layer)
            continue
        stack.extend(nxt for nxt, _ in getattr(node, "next_functions", ()))
    return found


def trace_flow(model: nn.Module, run: Callable[[], Any],
               prunable: tuple[type, ...]) -> Flow:
    """Run ``run()`` (the model's forward, gradients on) once and read where outputs go."""
    made_by: dict[Any, nn.Module] = {}
    inputs: list[tuple[nn.Module, Any]] = []
    ran: list[nn.Module] = []

    def hook(mod: nn.Module, args: tuple, out: Any) -> None:
        ran.append(mod)
        for t in tensors_in(out):
            if t.grad_fn is not None:
                made_by[t.grad_fn] = mod
        for t in tensors_in(list(args)):
            if t.grad_fn is not None:
                inputs.append((mod, t.grad_fn))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, prunable)]
    try:
        with torch.enable_grad():
            out = run()
    finally:
        for h in hooks:
            h.remove()
    consumers: dict[nn.Module, set[nn.Module]] = {m: set() for m in ran}
    for layer, node in inputs:
        for producer in _producers(node, made_by):
            consumers[producer].add(layer)
    heads: dict[nn.Module, None] = {}
    for t in tensors_in(out):
        for layer in _producers(t.grad_fn, made_by):
            heads.setdefault(layer)
    for layer, fed in consumers.items():
        if not fed:
            heads.setdefault(layer)
    shared = {m for m in consumers if ran.count(m) > 1}
    return Flow(heads=list(heads), consumers=consumers, shared=shared)


__all__ = ["Flow", "trace_flow"]
