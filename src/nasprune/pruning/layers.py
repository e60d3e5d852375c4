"""Layer pruning: replace whole residual blocks by the identity.

A block ``y = act(x + f(x))`` with an identity shortcut can be dropped entirely — the
network still runs and keeps its shapes — and deep residual networks often lose little
accuracy for it (Veit et al. 2016, "Residual networks behave like ensembles of relatively
shallow networks"). This removes depth, which channel pruning cannot, and so cuts latency
on hardware where narrow layers do not get faster.

Blocks are found from the model itself: a submodule is a removable block when, in a real
forward pass, its output has its input's shape and its traced graph (``torch.fx``) ends in
an addition of its own input (through an optional activation). That covers CIFAR ResNet
BasicBlocks, torchvision-style blocks and MobileNetV2 inverted residuals with
``use_residual``, and user blocks written the same way.

This module holds the data-free parts (finding blocks, the output-norm score, replacing
them). ``remove_blocks``, whose ``"sensitivity"`` criterion evaluates the model, lives in
:mod:`nasprune.methods.blocks`; its old name here still resolves.
"""

from __future__ import annotations

import copy
import importlib
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nasprune.pruning.attention import transformer_layers
from nasprune.pruning.graph import call
from nasprune.pruning.module_kinds import Skip
from nasprune.task import as_task, is_dataset, to_device

_ADDS = {operator.add, operator.iadd, torch.add}
_ACT_FUNCS = {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, F.elu, torch.relu}
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU,
                nn.Identity, nn.Dropout)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _unwrap(node: fx.Node, gm: fx.GraphModule, through_acts: bool) -> fx.Node:
    """Follow ``node`` back through identity modules (and activations, if asked)."""
    while True:
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if isinstance(mod, nn.Identity) or (through_acts and isinstance(mod, _ACT_MODULES)):
                node = node.args[0]  # type: ignore[assignment]
                continue
        if through_acts and node.op == "call_function" and node.target in _ACT_FUNCS:
            node = node.args[0]  # type: ignore[assignment]
            continue
        if through_acts and node.op == "call_method" and node.target in ("relu", "relu_"):
            node = node.args[0]  # type: ignore[assignment]
            continue
        return node


def has_identity_shortcut(module: nn.Module) -> bool:
    """True when ``module``'s graph returns ``act(x + f(x))`` for its single input ``x``."""
    try:
        gm = fx.symbolic_trace(module)
    except Exception:  # untraceable (data-dependent control flow): not a removable block
        return False
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    if len(placeholders) != 1 or len(outputs) != 1:
        return False
    result = outputs[0].args[0]
    if not isinstance(result, fx.Node):
        return False
    add = _unwrap(result, gm, through_acts=True)
    is_add = (add.op == "call_function" and add.target in _ADDS) or (
        add.op == "call_method" and add.target in ("add", "add_")
    )
    if not is_add or len(add.args) < 2:
        return False
    operands = [a for a in add.args[:2] if isinstance(a, fx.Node)]
    return any(_unwrap(a, gm, through_acts=False) is placeholders[0] for a in operands)


def residual_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the submodules that can be replaced by ``nn.Identity`` (innermost first found).

    A block must run exactly once per forward, take one tensor and return a tensor of the
    same shape, and end in a residual add of its input (:func:`has_identity_shortcut`).
    A block containing another block is left out: the inner ones are the units removed.
    Transformer layers (:func:`~nasprune.pruning.attention.transformer_layers`) that run
    once are blocks too: dropped, they pass their hidden states on unchanged.
    """
    calls: dict[str, list[bool]] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name or not any(True for _ in m.children()):
            continue  # the root and leaf layers are never blocks

        def hook(mod, args, kwargs, out, name=name) -> None:
            same = (len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
                    and isinstance(out, torch.Tensor) and out.shape == args[0].shape)
            calls.setdefault(name, []).append(same)

        hooks.append(m.register_forward_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call(model, to_device(example_inputs, _device(model)))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    named = dict(model.named_modules())
    found = [n for n, c in calls.items()
             if c == [True] and has_identity_shortcut(named[n])]
    # Keep the innermost: drop any block that contains another block.
    found = [n for n in found if not any(o.startswith(n + ".") for o in found)]
    # Transformer layers (called with masks and caches, so never "one tensor in") drop whole.
    layers = [n for n in transformer_layers(model) if calls.get(n) and len(calls[n]) == 1]
    keep = set(found) | set(layers)
    return [n for n in calls if n in keep]


def _feed(model: nn.Module, data, example_inputs: Any, batches: int,
          device: torch.device) -> None:
    """Run ``batches`` training batches of ``data`` (or ``example_inputs``) through ``model``.

    A built-in Dataset feeds its in-memory batches; a task (or ``DataLoader``) its first
    training batches, routed by its ``forward``.
    """
    if data is None:
        call(model, to_device(example_inputs, device))
        return
    if is_dataset(data):
        for i, (xb, _) in enumerate(data.loader("train", batch_size=128, device=device)):
            if i >= batches:
                break
            model(xb)
        return
    task = as_task(data)
    for i, batch in enumerate(task.split("train")):
        if i >= batches:
            break
        task.forward(model, to_device(batch, device))


@torch.no_grad()
def output_norm_scores(
    model: nn.Module, blocks: Sequence[str], example_inputs: Any, data=None, batches: int = 4
) -> dict[str, float]:
    """Mean relative contribution ``‖block(x) − x‖ / ‖x‖`` of each block's residual branch.

    Measured per sample in eval mode on ``batches`` training batches (or on
    ``example_inputs`` without data); a small value means the block barely changes its input.
    """
    named = dict(model.named_modules())
    sums = dict.fromkeys(blocks, 0.0)
    counts = dict.fromkeys(blocks, 0)
    saved: dict[str, torch.Tensor] = {}
    hooks = []
    for name in blocks:
        def pre(mod, args, name=name) -> None:
            saved[name] = args[0].detach().clone()  # the block may overwrite its input in place

        def post(mod, args, out, name=name) -> None:
            x = saved.pop(name).flatten(1).float()
            diff = (out.detach().flatten(1).float() - x).norm(dim=1)
            ratio = diff / x.norm(dim=1).clamp_min(1e-12)
            sums[name] += float(ratio.sum())
            counts[name] += ratio.numel()

        hooks += [named[name].register_forward_pre_hook(pre),
                  named[name].register_forward_hook(post)]
    was_training = model.training
    model.eval()
    try:
        _feed(model, data, example_inputs, batches, _device(model))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {n: sums[n] / max(counts[n], 1) for n in blocks}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule called ``name``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def split_dropped_blocks(model: nn.Module, example_inputs: Any, ratios: Any
                         ) -> tuple[Any, list[str]]:
    """Prune ratios with the whole blocks to drop taken out: ``(group ratios, blocks)``.

    A ratio of 1.0 (everything removed; no channel group accepts it) keyed by a block's
    name (:func:`residual_blocks`) drops that block, so one ratios dict — a search result's,
    ``nasprune prune --ratios`` — says both the widths and the depth of a network.
    """
    if not isinstance(ratios, Mapping):
        return ratios, []
    whole = [k for k, v in ratios.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v) == 1.0]
    if not whole:
        return ratios, []
    known = set(residual_blocks(model, example_inputs))
    blocks = [k for k in whole if k in known]
    # Any other 1.0 stays: the group check names it ("must be in [0, 1)", or no such group).
    return {k: v for k, v in ratios.items() if k not in blocks}, blocks


def without_blocks(model: nn.Module, removed: Sequence[str], criterion: str,
                   scores: dict[str, float]) -> nn.Module:
    """A copy of ``model`` with the blocks ``removed`` replaced by ``Skip`` (an Identity that
    also accepts a Transformer layer's extra arguments).

    The copy records ``nasprune_pruning`` = {"method": "remove_blocks", "criterion",
    "removed", "scores"} so a saved model can be rebuilt; a second round keeps one record of
    all the blocks removed, another method's record is kept inside as ``previous``.
    """
    pruned = copy.deepcopy(model)
    for name in removed:
        replace_module(pruned, name, Skip())
    info: dict[str, Any] = {
        "method": "remove_blocks",
        "criterion": criterion,
        "removed": list(removed),
        "scores": scores,
    }
    prev = getattr(model, "nasprune_pruning", None)
    if isinstance(prev, dict):
        if prev.get("method") == "remove_blocks":  # a second round: one record of all removed
            info["removed"] = list(prev.get("removed", [])) + list(removed)
            if "previous" in prev:
                info["previous"] = prev["previous"]
        else:
            info["previous"] = prev
    pruned.nasprune_pruning = info  # type: ignore[attr-defined]
    return pruned


# Block removal by evaluation needs metrics and training, so it moved to
# nasprune.methods.blocks; resolved on first use so this module never imports them.
_MOVED = {"CRITERIA", "remove_blocks", "sensitivity_scores"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module("nasprune.methods.blocks"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
