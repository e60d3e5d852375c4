"""A lower-dimensional search space: one keep ratio per stage, tied across its groups.

ResNet-20 has 12 channel groups but 3 stages (resolutions); a strategy that learns 3 numbers
needs far fewer trials than one learning 12. :class:`StageSpace` is a
:class:`~nasprune.search.space.SearchSpace` whose point (the keep vector strategies propose,
store and learn from) has one coordinate per stage: the groups whose producing layer works
at the same spatial resolution. Every group of stage ``s`` keeps ``keep[s]`` of its
channels, up to a sub-channel stagger: group ``j`` of a stage's ``m`` gets
``keep[s] + δ_j · step_j / C_j`` with ``δ_j`` spread evenly over (-½, ½). At a keep ratio
that is a whole number of channels for every group (the uniform ratios 0.5, 0.75 of
ResNet-20) the stagger changes nothing; between two such ratios it makes the groups of a
stage gain their next channel one after the other instead of all at once, so raising one
coordinate adds one channel (or ``round_to`` step) at a time and the projection lands as
close to the budget as the per-group space's does.

Everything that takes a keep vector (``kept``, ``cost``, ``prune_ratios``, ``project``)
takes this stage vector; ``group_keep`` expands it to one ratio per group and
``keep_from_ratios`` maps any per-group ratios to the nearest stage vector (exact for
uniform ratios), which is how warm-start candidates enter this space.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.search.budget import LoadFn, bisect_scale
from nasprune.search.space import SearchSpace

# Bisection steps to locate the coordinate value where a group gains or loses a channel.
_BREAK_ITERS = 30


def stage_keys(space: SearchSpace) -> list[int]:
    """Per group: the output positions (H·W) of its producing layer, its stage key."""
    layers = space.cost_model.layers
    keys = []
    for g in space.groups:
        found = [layers[n].positions for n in g.out_layers if n in layers]
        keys.append(int(found[0]) if found else 0)
    return keys


class StageSpace(SearchSpace):
    """Keep ratios tied within each stage (same resolution), one coordinate per stage.

    Takes :class:`SearchSpace`'s arguments; ``min_keep``/``max_keep`` bound every group as
    there, and a stage's coordinate spans its groups' bounds. ``stages`` (group name ->
    any label) overrides the grouping by resolution.
    """

    kind = "stage"

    def __init__(self, model: nn.Module, example_inputs: Any,
                 ignored: Iterable[str | nn.Module] | None = None, *,
                 stages: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(model, example_inputs, ignored=ignored, **kwargs)
        self.group_lower, self.group_upper = self.lower, self.upper
        labels = self._labels(stages)
        order = list(dict.fromkeys(labels))  # stages in network order
        self.stage_of = np.array([order.index(lab) for lab in labels], dtype=np.int64)
        self.dim = len(order)
        members = [np.flatnonzero(self.stage_of == s) for s in range(self.dim)]
        self.stage_names = [self.names[m[0]] for m in members]
        self.lower = np.array([self.group_lower[m].min() for m in members])
        self.upper = np.array([self.group_upper[m].max() for m in members])
        # The stagger (module docstring): δ_j evenly in (-1/2, 1/2), in keep-ratio units.
        delta = np.zeros(len(self.names))
        for m in members:
            delta[m] = (np.arange(len(m)) + 0.5) / len(m) - 0.5
        self._offset = delta * self._step / self._f_channels

    def _labels(self, stages: dict[str, Any] | None) -> list[Any]:
        if stages is None:
            return stage_keys(self)
        missing = [n for n in self.names if n not in stages]
        unknown = sorted(set(stages) - set(self.names))
        if missing or unknown:
            raise NaspruneError(f"stages must name every group exactly: missing {missing}, "
                                f"unknown {unknown}")
        return [stages[n] for n in self.names]

    # --- naming and the map to groups ---------------------------------------------------
    def param_name(self, i: int) -> str:
        """The Optuna parameter name of stage ``i`` (named after its first group)."""
        return f"stage{i:02d}_{self.stage_names[i]}"

    def group_keep(self, keep: np.ndarray) -> np.ndarray:
        """One keep ratio per group: its stage's coordinate plus the group's stagger."""
        keep = np.asarray(keep, dtype=float)
        if keep.shape != (self.dim,):
            raise NaspruneError(f"a stage keep vector needs {self.dim} values, got {keep.shape}")
        return np.clip(keep[self.stage_of] + self._offset, self.group_lower, self.group_upper)

    def nearest_keep(self, group_keep: np.ndarray) -> np.ndarray:
        """The nearest stage vector to per-group keep ratios (exact for uniform ones).

        Each stage gets its groups' keep ratios averaged, weighted by channels, so the stage
        keeps as many channels in all as the per-group ratios asked for.
        """
        group_keep = np.asarray(group_keep, dtype=float)
        total = np.bincount(self.stage_of, weights=group_keep * self._f_channels,
                            minlength=self.dim)
        width = np.bincount(self.stage_of, weights=self._f_channels, minlength=self.dim)
        return np.clip(total / width, self.lower, self.upper)

    def keep_from_ratios(self, ratios: dict[str, float]) -> np.ndarray:
        """The nearest stage vector to per-group prune ratios (see :meth:`nearest_keep`)."""
        return self.nearest_keep(super().keep_from_ratios(ratios))

    def prune_ratios(self, keep: np.ndarray) -> dict[str, float]:
        return super().prune_ratios(self.group_keep(keep))

    def kept(self, keep: np.ndarray) -> np.ndarray:
        """Channels each *group* keeps at stage vector ``keep``."""
        return super().kept(self.group_keep(keep))

    def kept_exact(self, keep: np.ndarray) -> np.ndarray:
        """The same through the scalar rule itself (slow; tests check ``kept`` with it)."""
        ratios = self.prune_ratios(keep)
        return np.array([g.kept(ratios[g.name], self.round_to, self.min_channels)
                         for g in self.groups])

    def features(self) -> np.ndarray:
        """Per-stage embedding: the mean of its groups' features, the sum of their shares."""
        f = super().features()
        out = np.stack([f[self.stage_of == s].mean(axis=0) for s in range(self.dim)])
        for col in (5, 6):  # macs_share, params_share add up over a stage
            out[:, col] = np.bincount(self.stage_of, weights=f[:, col], minlength=self.dim)
        out[:, 0] = np.arange(self.dim) / max(1, self.dim - 1)
        return np.clip(out, 0.0, 1.0)

    # --- projection ---------------------------------------------------------------------
    def _move(self, x: np.ndarray, i: int, up: bool) -> float | None:
        """Coordinate ``i``'s nearest value above (``up``) or below where the channels change.

        Up: the smallest value with more channels; down: the largest with fewer. None when
        the bound is reached first.
        """
        end = self.upper[i] if up else self.lower[i]
        probe = x.copy()
        now = self.kept(x)
        probe[i] = end
        if np.array_equal(self.kept(probe), now):
            return None
        same, other = x[i], end
        for _ in range(_BREAK_ITERS):
            probe[i] = 0.5 * (same + other)
            if np.array_equal(self.kept(probe), now):
                same = probe[i]
            else:
                other = probe[i]
        return float(other)

    def _fill(self, x: np.ndarray, target: np.ndarray, load: LoadFn,
              frozen: int | None = None) -> np.ndarray:
        """Raise coordinates one channel change at a time while the budget holds.

        Stages lagging furthest behind ``target`` (the scaled vector just over the budget)
        go first, as in :func:`~nasprune.search.budget.fill`.
        """
        x = x.copy()
        for _ in range(int(self.channels.sum()) + 1):  # each pass adds ≥ 1 channel or stops
            changed = False
            for i in np.argsort(-(target - x), kind="stable"):
                if i == frozen:
                    continue
                nxt = self._move(x, int(i), up=True)
                if nxt is None:
                    continue
                trial = x.copy()
                trial[i] = nxt
                if load(trial) <= 1.0:
                    x, changed = trial, True
            if not changed:
                return x
        return x

    def _refine(self, x: np.ndarray, target: np.ndarray, load: LoadFn) -> np.ndarray:
        """Trade one to three channel changes of one stage for a refill of the others."""
        best, best_load = x, load(x)
        for _ in range(3):
            if best_load >= 1.0 - self.tolerance:
                break
            improved = False
            for j in range(self.dim):
                cand = best
                for _steps in range(3):
                    low = self._move(cand, j, up=False)
                    if low is None:
                        break
                    cand = cand.copy()
                    cand[j] = low
                    filled = self._fill(cand, target, load, frozen=j)
                    f_load = load(filled)
                    if best_load < f_load <= 1.0:
                        best, best_load, improved = filled, f_load, True
            if not improved:
                break
        return best

    def _onto_budget(self, keep: np.ndarray, load: LoadFn, exact: bool) -> np.ndarray:
        """Uniform scaling of the stage vector, then channel-level filling."""
        x, _, s_over = bisect_scale(keep, self.lower, self.upper, load)
        if math.isfinite(s_over):
            target = np.clip(s_over * np.maximum(keep, 1e-9), self.lower, self.upper)
            x = self._fill(x, target, load)
            if exact:
                x = self._refine(x, target, load)
        return x


__all__ = ["StageSpace", "stage_keys"]
