"""The search space: one keep ratio per prunable channel group, with bounds and costs.

A point of the space is a keep vector (``keep[i]`` = fraction of group ``i``'s channels that
survive). Strategies propose keep vectors; :meth:`SearchSpace.project` fits them to the
budget; :meth:`SearchSpace.prune_ratios` turns them into the prune ratios (fraction
*removed*, keyed by group name) that :func:`nasprune.prune` and ``nasprune prune --ratios``
take. Costs come from the analytic :class:`~nasprune.search.costmodel.CostModel`, which
agrees with counting the really pruned network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.graph import (
    ChannelGroup,
    Steps,
    check_steps,
    groups,
    ignored_names,
    step_of,
)
from nasprune.pruning.mha import split_copy
from nasprune.search.budget import Budget, LoadFn, bisect_scale, fill, refine
from nasprune.search.costmodel import CostModel

FEATURE_NAMES = (
    "index", "depthwise", "channels", "kernel", "stride", "macs_share", "params_share",
)


def _bounds(value: float | Sequence[float] | dict[str, float], names: list[str],
            what: str) -> np.ndarray:
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise NaspruneError(f"{what}: unknown group(s) {sorted(unknown)}")
        default = 1.0 if what == "max_keep" else 0.1
        arr = np.array([float(value.get(n, default)) for n in names])
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        arr = np.full(len(names), float(value))
    else:
        arr = np.asarray(value, dtype=float)
        if arr.shape != (len(names),):
            raise NaspruneError(f"{what} needs one value per group ({len(names)}), got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0) or np.any(arr > 1.0):
        raise NaspruneError(f"{what} must be in (0, 1], got {value!r}")
    return arr


class SearchSpace:
    """Keep ratios in ``[lower[i], upper[i]]`` for each dependency group of ``model``.

    ``min_channels`` and ``round_to`` (one width step, or a dict group name → step) are the
    surgery's own options, so the analytic widths equal the real ones; pass the same values to :func:`nasprune.prune`. Its keep vector
    has one ratio per group; a lower-dimensional space (:mod:`.stage_space`) overrides the
    methods that map its own vector to groups (``group_keep``, ``nearest_keep``, ...).
    """

    kind = "per-group"  # the name search(space=...) and --space give this space

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        ignored: Iterable[str | nn.Module] | None = None,
        min_keep: float | Sequence[float] | dict[str, float] = 0.1,
        max_keep: float | Sequence[float] | dict[str, float] = 1.0,
        round_to: Steps = None,
        min_channels: int = 1,
    ) -> None:
        check_steps(round_to)
        ignored = ignored_names(model, ignored)  # module objects do not survive the copy
        model = split_copy(model)  # nn.MultiheadAttention as pruning sees it: heads as units
        self.groups: list[ChannelGroup] = groups(model, example_inputs, ignored=ignored)
        if not self.groups:
            raise NaspruneError("the model has no prunable channel groups to search over")
        self.names = [g.name for g in self.groups]
        check_steps(round_to, self.names)
        self.dim = len(self.groups)
        self.lower = _bounds(min_keep, self.names, "min_keep")
        self.upper = _bounds(max_keep, self.names, "max_keep")
        if np.any(self.lower > self.upper):
            raise NaspruneError("min_keep must not exceed max_keep")
        self.round_to = round_to
        self.min_channels = min_channels
        self.channels = np.array([g.channels for g in self.groups], dtype=np.int64)
        self.cost_model = CostModel(model, example_inputs, self.groups)
        self.base_macs, self.base_params = self.cost_model.cost(self.channels)
        self.latency = None  # a LatencyModel, attached by search() for latency budgets
        # Projection aims this close under the budget (relative) before it stops trading.
        self.tolerance = 0.005
        self._floor = np.minimum(np.maximum(min_channels, 1), self.channels).astype(float)
        self._f_channels = self.channels.astype(float)
        # Per-group rounding steps: round_to and the group's divisor (conv groups, heads).
        self._div = np.array([g.divisor for g in self.groups], dtype=float)
        self._step = np.array([math.lcm(step_of(round_to, g.name) or 1, g.divisor)
                               for g in self.groups], dtype=float)
        self._any_step, self._any_div = bool((self._step > 1).any()), bool((self._div > 1).any())

    # --- naming -------------------------------------------------------------------------
    def param_name(self, i: int) -> str:
        """The Optuna parameter name of group ``i`` (index first: sorts in group order)."""
        return f"keep{i:03d}_{self.names[i]}"

    def keep_from_params(self, params: dict[str, float]) -> np.ndarray:
        try:
            return np.array([float(params[self.param_name(i)]) for i in range(self.dim)])
        except KeyError as exc:
            raise NaspruneError(f"trial parameters lack {exc}: not a study of this model") from None

    def prune_ratios(self, keep: np.ndarray) -> dict[str, float]:
        """Prune ratios (fraction removed) keyed by group name, as ``nasprune.prune`` takes."""
        keep = np.asarray(keep, dtype=float)
        return {n: float(1.0 - k) for n, k in zip(self.names, keep, strict=True)}

    def keep_from_ratios(self, ratios: dict[str, float]) -> np.ndarray:
        """The keep vector of per-group prune ratios (groups not named keep everything)."""
        return np.array([1.0 - float(ratios.get(n, 0.0)) for n in self.names])

    def group_keep(self, keep: np.ndarray) -> np.ndarray:
        """One keep ratio per group (here the keep vector itself)."""
        return np.asarray(keep, dtype=float)

    def nearest_keep(self, group_keep: np.ndarray) -> np.ndarray:
        """The point of this space nearest to per-group keep ratios (here: within bounds)."""
        return np.clip(np.asarray(group_keep, dtype=float), self.lower, self.upper)

    # --- costs --------------------------------------------------------------------------
    def kept(self, keep: np.ndarray) -> np.ndarray:
        """Channels each group keeps (as floats) — ``ChannelGroup.kept`` on ``1 - keep``.

        Vectorised copy of ``kept_channels``, same float operations in the same order, so it
        gives the surgery's widths exactly (tests compare it with the scalar rule).
        """
        keep = np.asarray(keep, dtype=float)
        ratio = 1.0 - keep
        k = np.rint(self._f_channels * (1.0 - ratio))
        if self._any_step:
            k = np.where(self._step > 1, self._step * np.maximum(1, np.rint(k / self._step)), k)
        k = np.maximum(np.minimum(k, self._f_channels), self._floor)
        if self._any_div:
            k = np.minimum(self._f_channels, np.ceil(k / self._div) * self._div)
        return np.where(ratio <= 0, self._f_channels, k)

    def kept_exact(self, keep: np.ndarray) -> np.ndarray:
        """The same through the scalar rule itself (slow; used by tests to check ``kept``)."""
        ratios = self.prune_ratios(keep)
        return np.array([g.kept(ratios[g.name], self.round_to, self.min_channels)
                         for g in self.groups])

    def cost(self, keep: np.ndarray) -> tuple[int, int]:
        """Analytic (MACs, params) of the network pruned to ``keep``."""
        return self.cost_of_kept(self.kept(keep))

    def cost_of_kept(self, kept: np.ndarray) -> tuple[int, int]:
        """(MACs, params) of the network of shape ``kept`` (what :meth:`kept` returns)."""
        return self.cost_model.cost(kept)

    def fractions(self, keep: np.ndarray) -> tuple[float, float]:
        macs, params = self.cost(keep)
        return macs / self.base_macs, params / self.base_params

    def features(self) -> np.ndarray:
        """Per-group embedding ``(dim, 7)`` in [0, 1], columns :data:`FEATURE_NAMES`.

        index, depthwise flag, channels, kernel size, stride (normalised by their maxima),
        and the shares of the network's MACs and params in layers the group touches.
        """
        cm = self.cost_model
        macs, params = cm.layer_costs(self.channels)
        rows = []
        for gi, g in enumerate(self.groups):
            touched = set(g.out_layers) | set(g.in_layers)
            li = [i for i, n in enumerate(cm.layer_names) if n in touched]
            outs = [cm.layers[n] for n in g.out_layers if n in cm.layers]
            rows.append([
                gi / max(1, self.dim - 1),
                float(any(geo.depthwise for geo in outs)),
                float(g.channels),
                float(max((geo.kernel for geo in outs), default=1)),
                float(max((geo.stride for geo in outs), default=1)),
                float(macs[li].sum()) / max(1, self.base_macs),
                float(params[li].sum()) / max(1, self.base_params),
            ])
        f = np.array(rows, dtype=float)
        for col in (2, 3, 4):
            f[:, col] /= max(f[:, col].max(), 1e-12)
        return np.clip(f, 0.0, 1.0)

    # --- budgets ------------------------------------------------------------------------
    def latency_limit(self, budget: Budget) -> float | None:
        """The predicted-ms limit of a latency and/or speed-up budget (None: untimed)."""
        if not budget.timed:
            return None
        if self.latency is None:
            raise NaspruneError(
                "a latency budget needs a latency table: use search(..., target="
                "Budget(latency_ms=... or speedup=...)) which measures one, or attach "
                "space.latency")
        limits = [budget.latency_ms] if budget.latency_ms is not None else []
        if budget.speedup is not None:
            limits.append(self.latency.base_ms / budget.speedup)
        return min(limits)

    def _load_fn(self, budget: Budget):
        limit = self.latency_limit(budget)

        def load(keep: np.ndarray) -> float:
            kept = self.kept(keep)
            out = 0.0
            if budget.macs is not None or budget.params is not None:
                macs, params = self.cost_of_kept(kept)
                if budget.macs is not None:
                    out = max(out, macs / self.base_macs / budget.macs)
                if budget.params is not None:
                    out = max(out, params / self.base_params / budget.params)
            if limit is not None:
                out = max(out, self.latency.predict(kept) / limit)
            return out * (1.0 - 1e-12)  # float noise must not make an exact fit "over"

        return load

    def minimum(self, budget: Budget) -> dict[str, float]:
        """The smallest cost reachable (every group at its lower bound)."""
        macs, params = self.cost(self.lower)
        out = {"macs": macs / self.base_macs, "params": params / self.base_params}
        if budget.timed and self.latency is not None:
            out["latency_ms"] = self.latency.predict(self.kept(self.lower))
            out["speedup"] = self.latency.base_ms / out["latency_ms"]
        return out

    def within(self, keep: np.ndarray, budget: Budget) -> bool:
        """Whether the network pruned to ``keep`` meets every limit of ``budget``."""
        return self._load_fn(budget)(np.asarray(keep, dtype=float)) <= 1.0

    def check_feasible(self, budget: Budget) -> None:
        """Raise :class:`NaspruneError`, naming the minimum achievable, if nothing fits."""
        load = self._load_fn(budget)
        if load(self.lower) <= 1.0:
            return
        low = self.minimum(budget)
        parts = []
        if budget.macs is not None:
            parts.append(f"MACs {low['macs']:.1%} of the original (asked {budget.macs:.1%})")
        if budget.params is not None:
            parts.append(f"params {low['params']:.1%} of the original "
                         f"(asked {budget.params:.1%})")
        if budget.latency_ms is not None:
            parts.append(f"predicted latency {low['latency_ms']:.3g} ms "
                         f"(asked {budget.latency_ms:g} ms)")
        if budget.speedup is not None:
            parts.append(f"a predicted speed-up of only {low['speedup']:.2f}x on "
                         f"{self.latency.meta.get('runtime_name', 'this runtime')} "
                         f"(asked {budget.speedup:g}x)")
        raise NaspruneError(
            "budget cannot be met: with every group at its minimum keep ratio "
            f"({self.lower.min():g}) the pruned model still has " + ", ".join(parts)
            + "; lower min_keep or relax the budget")

    def project(self, keep: np.ndarray, budget: Budget, exact: bool = True) -> np.ndarray:
        """Map ``keep`` onto the budget, respecting bounds (see :mod:`.budget`).

        ``exact=True`` scales up or down to sit just under the budget (single-objective
        search); ``exact=False`` only scales down vectors over the budget (multi-objective
        search, where smaller is a goal of its own). The spaces differ only in
        :meth:`_onto_budget`.
        """
        keep = np.asarray(keep, dtype=float)
        if keep.shape != (self.dim,) or not np.all(np.isfinite(keep)):
            raise NaspruneError(f"a keep vector needs {self.dim} finite values")
        keep = np.clip(keep, self.lower, self.upper)
        load = self._load_fn(budget)
        if not exact and load(keep) <= 1.0:
            return keep
        self.check_feasible(budget)
        return self._onto_budget(keep, load, exact)

    def _onto_budget(self, keep: np.ndarray, load: LoadFn, exact: bool) -> np.ndarray:
        """Uniform scaling onto the budget, then channel-level filling (and refining)."""
        x, _, s_over = bisect_scale(keep, self.lower, self.upper, load)
        if math.isfinite(s_over):
            target = np.clip(s_over * np.maximum(keep, 1e-9), self.lower, self.upper)
            step = self._step
            x = fill(x, target, self.upper, self.channels, self.kept, step, load)
            if exact:
                x = refine(x, target, self.lower, self.upper, self.channels, self.kept, step,
                           load, self.tolerance)
        return x
