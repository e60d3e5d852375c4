"""Network slimming (Liu et al. 2017): train with L1 on BatchNorm γ, then cut small γ globally.

Workflow::

    fit(model, data, epochs=30, bn_l1=1e-4)          # sparsity-inducing training
    slim_model = slim(model, example, macs_target=0.5)  # one global |γ| threshold
    finetune(slim_model, data, epochs=10)             # recover

``bn_l1=1e-4`` is the paper's value for 160 CIFAR epochs; a short run needs a stronger
penalty (8 epochs on digits: 3e-2 — 1e-1 already collapses the network).

The L1 penalty drives the scaling factor γ of unimportant channels toward zero, so one
threshold over all BatchNorm layers decides both which channels go and how many each layer
loses — the layer widths come out of training instead of being chosen by hand. Channels are
scored by |γ| averaged over the BatchNorm layers of their group (a residual group has one
per block); groups without BatchNorm are not pruned.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasprune.errors import NaspruneError
from nasprune.methods.registry import Context, Pruned, ratios_of, register_method


@torch.no_grad()
def channel_gammas(
    model: nn.Module, example_inputs: Any, ignored: Iterable[str | nn.Module] | None = None
) -> dict[str, torch.Tensor]:
    """|γ| per channel of every prunable group that has BatchNorm (mean over its BN layers)."""
    from nasprune.pruning.graph import build_graph, iter_tp_groups, members

    graph = build_graph(model, example_inputs)
    out: dict[str, torch.Tensor] = {}
    for info, tp_group in iter_tp_groups(model, graph, example_inputs, ignored):
        total = torch.zeros(info.channels, dtype=torch.float64)
        count = torch.zeros(info.channels, dtype=torch.float64)
        for m in members(model, graph, tp_group):
            if isinstance(m.module, _BatchNorm) and m.module.affine and m.role == "out":
                gamma = m.module.weight.detach().abs()[m.idx].double().cpu()
                total.scatter_add_(0, m.root, gamma)
                count.scatter_add_(0, m.root, torch.ones_like(gamma))
        if count.sum() > 0:
            out[info.name] = total / count.clamp_min(1)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))


def bn_gammas(model: nn.Module) -> torch.Tensor:
    """All BatchNorm |γ| of ``model`` in one flat tensor (to inspect how skewed they are)."""
    vals = [m.weight.detach().abs().flatten().cpu() for m in model.modules()
            if isinstance(m, _BatchNorm) and m.affine]
    return torch.cat(vals) if vals else torch.zeros(0)


def slimming_ratios(
    gammas: dict[str, torch.Tensor], ratio: float, max_ratio: float = 0.9
) -> dict[str, float]:
    """Per-group prune ratios from one global |γ| cut removing ``ratio`` of all channels."""
    flat = torch.cat(list(gammas.values()))
    k = int(round(ratio * flat.numel()))
    if k == 0:
        return dict.fromkeys(gammas, 0.0)
    # Stable ranking: exactly k channels fall under the cut even when γ values tie.
    order = torch.sort(flat, stable=True).indices
    cut = torch.zeros(flat.numel(), dtype=torch.bool)
    cut[order[:k]] = True
    out, start = {}, 0
    for name, g in gammas.items():
        n = int(cut[start : start + g.numel()].sum())
        out[name] = min(n / g.numel(), max_ratio)
        start += g.numel()
    return out


def _check_slim_args(ratio: float | None, macs_target: float | None, max_ratio: float) -> None:
    if (ratio is None) == (macs_target is None):
        raise NaspruneError("slim needs exactly one of ratio= or macs_target=")
    for name, v, hi_ok in (("ratio", ratio, False), ("macs_target", macs_target, True)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
            0.0 <= v < 1.0 if not hi_ok else 0.0 < v <= 1.0
        ):
            raise NaspruneError(f"{name} must be in {'(0, 1]' if hi_ok else '[0, 1)'}, "
                                f"got {v!r}")
    if not (0.0 < max_ratio < 1.0):
        raise NaspruneError(f"max_ratio must be in (0, 1), got {max_ratio!r}")


def _cut_to_macs(cut: Callable[[float], nn.Module], model: nn.Module, example_inputs: Any,
                 macs_target: float, max_ratio: float) -> tuple[nn.Module, float]:
    """The smallest global ratio whose cut keeps at most ``macs_target`` of the MACs."""
    from nasprune.metrics import count_macs

    base = count_macs(model, example_inputs)
    budget = float(macs_target) * base
    pruned = cut(0.0)
    if count_macs(pruned, example_inputs) <= budget:
        return pruned, 0.0
    hi = 0.999
    best = cut(hi)
    if count_macs(best, example_inputs) > budget:
        raise NaspruneError(
            f"MACs target {macs_target} is out of reach by slimming: with every group "
            f"at max_ratio={max_ratio} the model keeps "
            f"{count_macs(best, example_inputs) / base:.3f} of its MACs"
        )
    lo = 0.0
    for _ in range(16):  # fine enough to move one channel at a time
        mid = (lo + hi) / 2
        m = cut(mid)
        if count_macs(m, example_inputs) <= budget:
            hi, best = mid, m
        else:
            lo = mid
    return best, hi


def slim(
    model: nn.Module,
    example_inputs: Any,
    ratio: float | None = None,
    macs_target: float | None = None,
    max_ratio: float = 0.9,
    round_to: int | None = None,
    ignored: Iterable[str | nn.Module] | None = None,
) -> nn.Module:
    """Prune the channels with the smallest BatchNorm |γ| across the whole network.

    Give exactly one of ``ratio`` (the fraction of all BN-scored channels to remove) or
    ``macs_target`` (the fraction of MACs to keep; the global ratio is bisected until the
    pruned model has at most that many). No group loses more than ``max_ratio`` of its
    channels. Returns a new, physically smaller model (``nasprune.prune`` with the
    ``bn_scale`` criterion); the input is untouched. Train with ``fit(..., bn_l1=1e-4)``
    first — on a normally trained model this is just a global |γ| ranking.
    """
    from nasprune.pruning import prune

    _check_slim_args(ratio, macs_target, max_ratio)
    gammas = channel_gammas(model, example_inputs, ignored)
    if not gammas:
        raise NaspruneError("network slimming needs BatchNorm layers: the model has no "
                            "prunable group with a BatchNorm")

    def cut(r: float) -> nn.Module:
        ratios = {g: v for g, v in slimming_ratios(gammas, r, max_ratio).items() if v > 0}
        return prune(model, example_inputs, ratios, criterion="bn_scale", round_to=round_to,
                     ignored=ignored)

    if ratio is not None:
        pruned, used = cut(float(ratio)), float(ratio)
    else:
        pruned, used = _cut_to_macs(cut, model, example_inputs, macs_target,  # type: ignore[arg-type]
                                    max_ratio)
    info = dict(getattr(pruned, "nasprune_pruning", None) or {})
    info.update({"method": "slimming", "criterion": "bn_scale", "global_ratio": used})
    pruned.nasprune_pruning = info  # type: ignore[attr-defined]
    return pruned


@register_method("slimming")
def slimming(ctx: Context) -> Pruned:
    """Train with L1 on BatchNorm γ, then cut the smallest |γ| globally (to the budget)."""
    s = ctx.settings
    ft = ctx.cfg.finetune
    sparse = copy.deepcopy(ctx.model)
    trained = 0.0
    if s.epochs > 0:
        from nasprune.train import finetune

        res = finetune(sparse, ctx.data, epochs=s.epochs, optimizer=ft.optimizer, lr=ft.lr,
                       weight_decay=ft.weight_decay, schedule=ft.schedule,
                       batch_size=ft.batch_size, augment=ft.augment, bn_l1=s.bn_l1,
                       seed=ctx.seed, device=ctx.device, progress=ctx.progress)
        trained = res.train_seconds
    start = time.perf_counter()
    model = slim(sparse, ctx.example, macs_target=ctx.cfg.budget, max_ratio=s.max_ratio,
                 round_to=ctx.cfg.round_to)
    return Pruned(model, search_seconds=time.perf_counter() - start,
                  extra_train_seconds=trained,
                  info={"bn_l1": s.bn_l1, "sparsity_epochs": s.epochs,
                        "ratios": ratios_of(model)})


__all__ = ["bn_gammas", "channel_gammas", "slim", "slimming", "slimming_ratios"]
