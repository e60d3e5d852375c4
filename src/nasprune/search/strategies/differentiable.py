"""``differentiable`` — channel gates trained by gradient descent with a budget penalty.

A procedure, not a sampler: it attaches one learnable gate per channel of every group to a
copy of the model (``sigmoid(logit)``, multiplied into the group's BatchNorm outputs, or into
its conv/linear outputs where the group has no BatchNorm — after BN, because a BN in front
of the next layer would otherwise normalise the gate away), and trains the gates (and,
optionally, the weights) on training batches with

    loss = cross-entropy + λ · (expected_cost / base_cost − target)²

where the expected cost is the analytic MACs (and/or params) model of the search space
evaluated on the *expected* widths — the sum of each group's gate values — in a torch
version that is differentiable in the widths (:class:`RelaxedCost`; it equals the space's
integer cost model at integer widths). The MACs penalty pulls hardest on the groups whose
channels cost most, the loss keeps the channels the network needs, so the gates end up
encoding which groups can afford to lose channels. The keep ratio of a group is read as the
fraction of its gates above 0.5 (or the mean gate, ``read="mean"``), clipped to the bounds
and projected exactly onto the budget. ``search()`` calls it once per trial with a derived
seed and evaluates the vector like any other trial.

The warm start (:mod:`nasprune.search.warm_start`) cannot seed this procedure: the gates
train afresh from the model each trial and use no earlier trial. Its baselines are still the
study's first trials, evaluated before any gate training, so the result's best covers them.

The model runs in eval mode while gates train (BatchNorm uses its running statistics), so a
gate that shrinks a channel really silences it downstream.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nasprune.errors import NaspruneError
from nasprune.search.strategies.learned import check_fraction, check_positive
from nasprune.task import Task, as_task, is_dataset, to_device

READS = ("threshold", "mean")


class RelaxedCost:
    """The space's analytic (MACs, params) as a torch function of continuous group widths.

    Mirrors :class:`~nasprune.search.costmodel.CostModel` (same layer tables), with the
    integer divisions of grouped convolutions made real-valued.
    """

    def __init__(self, space: Any) -> None:
        cm = space.cost_model
        f = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
        self.out_idx = torch.as_tensor(cm._out_idx, dtype=torch.long)
        self.has_out = f(cm._out_g >= 0)
        self.out_fixed, self.in_fixed, self.in_mat = f(cm._out_fixed), f(cm._in_fixed), f(cm._in_mat)
        self.groups, self.dw = f(cm._groups_fixed), torch.as_tensor(cm._dw)
        self.kernel, self.pos, self.bias = f(cm._kernel), f(cm._positions), f(cm._bias)
        self.mha_mask = torch.as_tensor(cm._kinds == 2)
        self.mha = f(cm._mha)
        self.o_vec, self.o_const = f(cm._o_vec), float(cm._o_const)
        self.fixed_params = float(cm._fixed_params)

    def __call__(self, width: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = width.to(torch.float64)
        out = self.out_fixed + width[self.out_idx] * self.has_out
        inn = self.in_fixed + self.in_mat @ width
        # Conv/linear: out · (in / groups) · k · positions (transposed conv: the same product).
        ipg = torch.where(self.dw, torch.ones_like(inn), inn / self.groups)
        w = out * ipg * self.kernel
        macs = w * self.pos
        params = w + self.bias * out
        if bool(self.mha_mask.any()):
            e = out
            nq, nk, nv, kd, vd, attn, b_in, b_out, b_kv = self.mha.unbind(1)
            kd = torch.where(kd == self.in_fixed, e, kd)
            vd = torch.where(vd == self.in_fixed, e, vd)
            mha_macs = 2 * nq * e * e + nk * kd * e + nv * vd * e + 2 * attn * e
            mha_params = 2 * e * e + kd * e + vd * e + b_in * 3 * e + b_out * e + b_kv * e
            macs = torch.where(self.mha_mask, mha_macs, macs)
            params = torch.where(self.mha_mask, mha_params, params)
        params_total = params.sum() + self.o_vec @ width + self.o_const + self.fixed_params
        return macs.sum(), params_total


def _gate_targets(model: nn.Module, group: Any) -> list[tuple[nn.Module, int]]:
    """Modules whose outputs carry the group's channels, with the channel dimension."""
    named = dict(model.named_modules())
    bns = [named[n] for n in group.other_layers
           if isinstance(named.get(n), _BatchNorm) and named[n].num_features == group.channels]
    if bns:
        return [(m, 1) for m in bns]
    out: list[tuple[nn.Module, int]] = []
    for n in group.out_layers:
        m = named.get(n)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.out_channels == group.channels:
            out.append((m, 1))
        elif isinstance(m, nn.Linear) and m.out_features == group.channels:
            out.append((m, -1))
    return out


def _gate_hook(logits: torch.Tensor, dim: int):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        shape = [1] * output.dim()
        shape[dim] = -1
        return output * torch.sigmoid(logits).view(shape)
    return hook


def _check_options(steps: int, lr: float, penalty: float, weight_lr: float, batch_size: int,
                   read: str) -> None:
    for name, value in (("steps", steps), ("lr", lr), ("penalty", penalty),
                        ("batch_size", batch_size)):
        check_positive(name, value)
    check_positive("weight_lr", weight_lr, allow_zero=True)
    if read not in READS:
        raise NaspruneError(f"differentiable read must be one of {', '.join(READS)}, got {read!r}")


def _cost_targets(budget: Any) -> dict[str, float]:
    """The budget's MACs and params fractions: what the penalty pulls the expected cost to."""
    targets = {k: getattr(budget, k, None) for k in ("macs", "params")}
    targets = {k: float(v) for k, v in targets.items() if v is not None}
    if not targets:
        raise NaspruneError("the differentiable strategy needs a MACs or params budget "
                            "(its penalty is the analytic cost); use another strategy for "
                            "latency-only budgets")
    for k, v in targets.items():
        check_fraction(f"budget {k}", v)
    return targets


def _attach_gates(net: nn.Module, space: Any, init: float, device: torch.device
                  ) -> tuple[list[torch.Tensor], list[Any], list[bool]]:
    """One gate logit per channel of every group, hooked into ``net``.

    Returns the logits, the hook handles (to remove) and whether each group found a module
    to gate.
    """
    logits, handles, gated = [], [], []
    for g in space.groups:
        # A little seeded noise breaks the tie between channels of equal importance.
        theta = torch.full((g.channels,), float(init), device=device)
        theta += 0.01 * torch.randn(g.channels, device=device)
        theta.requires_grad_(True)
        logits.append(theta)
        found = _gate_targets(net, g)
        gated.append(bool(found))
        for module, dim in found:
            handles.append(module.register_forward_hook(_gate_hook(theta, dim)))
    return logits, handles, gated


class _GateLoss:
    """task loss + λ · Σ (expected cost / base cost − target)² (module docstring)."""

    def __init__(self, space: Any, targets: dict[str, float], penalty: float,
                 device: torch.device, task: Task) -> None:
        self.relaxed = RelaxedCost(space)
        self.base = {"macs": float(space.base_macs), "params": float(space.base_params)}
        self.targets, self.penalty, self.device, self.task = targets, penalty, device, task

    def __call__(self, net: nn.Module, logits: list[torch.Tensor], batch: Any) -> torch.Tensor:
        width = torch.stack([torch.sigmoid(t).sum() for t in logits]).cpu()
        macs, n_params = self.relaxed(width)
        cost = {"macs": macs, "params": n_params}
        reg = sum((cost[k] / self.base[k] - v) ** 2 for k, v in self.targets.items())
        _, loss = self.task.compute_loss(net, to_device(batch, self.device))
        return loss + self.penalty * reg.to(self.device)


def _train_gates(net: nn.Module, logits: list[torch.Tensor], loss_fn: _GateLoss, loader: Any,
                 steps: int, lr: float, weight_lr: float, data_name: str) -> None:
    """``steps`` Adam steps on the gates (and SGD on the weights when ``weight_lr`` > 0)."""
    opts = [torch.optim.Adam([{"params": logits, "lr": lr}])]
    if weight_lr > 0:
        opts.append(torch.optim.SGD(list(net.parameters()), lr=weight_lr, momentum=0.9))
    step = 0
    while step < steps:
        for batch in loader:
            loss = loss_fn(net, logits, batch)
            if not torch.isfinite(loss):
                raise NaspruneError(f"gate training diverged: loss is {loss.item()} "
                                    f"at step {step}")
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
            step += 1
            if step >= steps:
                return
        if step == 0:
            raise NaspruneError(f"'{data_name}' has no full training batch")


def run(
    space: Any,
    proxy: Any,
    budget: Any,
    model: nn.Module,
    data: Any,
    seed: int | None = None,
    steps: int = 300,
    lr: float = 0.1,
    penalty: float = 20.0,
    weight_lr: float = 0.0,
    batch_size: int = 64,
    init: float = 3.0,
    read: str = "threshold",
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Train channel gates on ``data``'s training split; return the projected keep vector.

    ``penalty`` is λ; ``weight_lr`` > 0 also trains the weights (SGD) of the model copy;
    ``init`` is the initial gate logit (3 → gates 0.95). Needs a MACs and/or params budget.
    ``device`` defaults to the proxy's (CPU without one).
    """
    _check_options(steps, lr, penalty, weight_lr, batch_size, read)
    targets = _cost_targets(budget)
    device = torch.device(device or getattr(proxy, "device", None) or "cpu")

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        net = copy.deepcopy(model).to(device)
        net.eval()  # BN on running statistics: a small gate really silences its channel
        for p in net.parameters():
            p.requires_grad_(weight_lr > 0)
        logits, handles, gated = _attach_gates(net, space, init, device)
        task = as_task(data)
        # A built-in data set gets its fast shuffled loader; a task brings its own batches.
        loader = (data.loader("train", batch_size=batch_size, shuffle=True, device=device,
                              seed=0 if seed is None else seed, drop_last=True)
                  if is_dataset(data) else task.split("train"))
        try:
            _train_gates(net, logits, _GateLoss(space, targets, penalty, device, task), loader,
                         steps, lr, weight_lr, task.name)
        finally:
            for h in handles:
                h.remove()
    gates = [torch.sigmoid(t.detach()).cpu().numpy() for t in logits]
    # Ungated groups: no evidence, keep all. The gates are per group: a lower-dimensional
    # space takes its nearest point.
    keep = np.where(gated, read_keep(gates, read), 1.0)
    return space.project(space.nearest_keep(keep), budget)


def read_keep(gates: list[np.ndarray], read: str = "threshold") -> np.ndarray:
    """Keep ratio per group from its gate values: fraction above 0.5, or the mean gate."""
    if read == "mean":
        return np.array([float(g.mean()) for g in gates])
    return np.array([float((g > 0.5).mean()) for g in gates])
