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
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nasprune.errors import NaspruneError

CRITERIA = ("output_norm", "sensitivity")

_ADDS = {operator.add, operator.iadd, torch.add}
_ACT_FUNCS = {F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, F.elu, torch.relu}
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU,
                nn.Identity, nn.Dropout)


def _inputs(example_inputs: Any) -> tuple:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


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
            model(*[x.to(_device(model)) for x in _inputs(example_inputs)])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    named = dict(model.named_modules())
    found = [n for n, c in calls.items()
             if c == [True] and has_identity_shortcut(named[n])]
    # Keep the innermost: drop any block that contains another block.
    return [n for n in found if not any(o.startswith(n + ".") for o in found)]


def _batches(data, example_inputs: Any, batches: int, device: torch.device):
    if data is None:
        yield tuple(x.to(device) for x in _inputs(example_inputs))
        return
    for i, (xb, _) in enumerate(data.loader("train", batch_size=128, device=device)):
        if i >= batches:
            break
        yield (xb,)


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
        for xs in _batches(data, example_inputs, batches, _device(model)):
            model(*xs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {n: sums[n] / max(counts[n], 1) for n in blocks}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def sensitivity_scores(
    model: nn.Module,
    blocks: Sequence[str],
    data,
    bn_batches: int = 10,
    val_size: int | None = None,
) -> dict[str, float]:
    """Validation top-1 lost when each block alone is replaced by the identity.

    BatchNorm statistics are re-estimated after each removal (as the search's evaluator does),
    so the score measures the block, not stale statistics. Never uses the test split.
    """
    from nasprune.metrics import evaluate
    from nasprune.train import recalibrate_bn

    if val_size is not None:
        data = replace(data, val=data.val.subset(val_size))
    device = _device(model)

    def score(m: nn.Module) -> float:
        if bn_batches:
            recalibrate_bn(m, data.loader("train", batch_size=128, shuffle=True,
                                          device=device), batches=bn_batches)
        return float(evaluate(m, data, split="val", device=device)["top1"])

    base = score(copy.deepcopy(model))
    out = {}
    for name in blocks:
        trial = copy.deepcopy(model)
        _replace(trial, name, nn.Identity())
        out[name] = base - score(trial)
    return out


def remove_blocks(
    model: nn.Module,
    example_inputs: Any,
    n: int | None = None,
    fraction: float | None = None,
    criterion: str = "output_norm",
    data=None,
    batches: int = 4,
    bn_batches: int = 10,
    val_size: int | None = None,
) -> nn.Module:
    """A copy of ``model`` with its ``n`` least important residual blocks replaced by identity.

    Give exactly one of ``n`` (a count) or ``fraction`` (of the removable blocks, rounded).
    ``criterion``:

    * ``"output_norm"`` — the smallest mean ``‖block(x) − x‖ / ‖x‖`` goes first, measured on
      ``batches`` training batches of ``data`` (or on ``example_inputs`` without data);
    * ``"sensitivity"`` — the smallest validation top-1 drop when the block alone is removed
      (needs ``data``; BatchNorm recalibrated on ``bn_batches`` batches; ``val_size`` caps the
      validation samples).

    The input model is untouched. The result records ``nasprune_pruning`` = {"method":
    "remove_blocks", "criterion", "removed": [names], "scores": {name: score}} so a saved
    model can be rebuilt (the spec stores the removed blocks as ``Identity``). BatchNorm
    statistics downstream are not changed: fine-tune or recalibrate afterwards.
    """
    if (n is None) == (fraction is None):
        raise NaspruneError("remove_blocks needs exactly one of n= or fraction=")
    if criterion not in CRITERIA:
        raise NaspruneError(f"unknown block criterion '{criterion}': choose from "
                            f"{', '.join(CRITERIA)}")
    if criterion == "sensitivity" and data is None:
        raise NaspruneError("criterion 'sensitivity' needs data= (a Dataset with a val split)")
    blocks = residual_blocks(model, example_inputs)
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 <= fraction <= 1.0
        ):
            raise NaspruneError(f"fraction must be in [0, 1], got {fraction!r}")
        n = int(round(fraction * len(blocks)))
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise NaspruneError(f"n must be a non-negative integer, got {n!r}")
    if n > len(blocks):
        raise NaspruneError(
            f"cannot remove {n} blocks: the model has {len(blocks)} residual blocks with an "
            "identity shortcut"
        )
    if criterion == "output_norm":
        scores = output_norm_scores(model, blocks, example_inputs, data, batches)
    else:
        scores = sensitivity_scores(model, blocks, data, bn_batches, val_size)
    order = sorted(blocks, key=lambda b: (scores[b], blocks.index(b)))
    removed = sorted(order[:n], key=blocks.index)

    pruned = copy.deepcopy(model)
    for name in removed:
        _replace(pruned, name, nn.Identity())
    info: dict[str, Any] = {
        "method": "remove_blocks",
        "criterion": criterion,
        "removed": removed,
        "scores": scores,
    }
    prev = getattr(model, "nasprune_pruning", None)
    if isinstance(prev, dict):
        if prev.get("method") == "remove_blocks":  # a second round: one record of all removed
            info["removed"] = list(prev.get("removed", [])) + removed
            if "previous" in prev:
                info["previous"] = prev["previous"]
        else:
            info["previous"] = prev
    pruned.nasprune_pruning = info  # type: ignore[attr-defined]
    return pruned
