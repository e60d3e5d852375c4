"""Dependency groups found the way Torch-Pruning finds them, in linear time, with couplings.

``DependencyGraph.get_pruning_group`` walks every dependency triggered by pruning a root
layer and, before adding each step, scans the whole group built so far
(``Group.has_pruning_op`` compares index lists): quadratic in the group's size. On models
with wide, long residual streams (timm ``rexnet_100``, ``mobilevitv2_050``, torchvision
SSDlite) that scan was over 75 % of a prune's time, and where residual adds land on
channel slices (ReXNet's ``x[:, :c] += shortcut``) the same layer is reached with ever new
index subsets. :func:`pruning_group` walks the same dependencies but carries on from a
layer only the indices not yet walked from it, and merges the same way (the first root
index wins per layer channel), so the group it returns is the one Torch-Pruning builds.

The walk also records what the merge throws away: which group channels reach the same
layer channel. :func:`pruning_group` returns those coupled classes next to the group
(see :mod:`nasprune.pruning.coupling`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch_pruning as tp
from torch import nn
from torch_pruning import _helpers, ops
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.dependency import Dependency
from torch_pruning.dependency.group import Group


class _Classes:
    """Union-find over a group's channels: joined when they reach one layer channel."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a

    def classes(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted(c for c in out.values() if len(c) > 1)


def pruning_group(graph: tp.DependencyGraph, module: nn.Module, fn,
                  idxs: list[int], reached: set | None = None) -> tuple[Group, list[list[int]]]:
    """Torch-Pruning's group of ``fn`` on ``module`` at ``idxs``, and its coupled classes.

    The graph's index maps must be current (``update_index_mapping`` after every cut).
    ``reached``, if given, collects the modules whose output channels the walk reached, as
    it goes (so a caller still knows them when the walk fails).
    """
    if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels > 1:
        fn = tp.pruner.function.prune_depthwise_conv_out_channels
    node = graph.module2node[module]
    root = Dependency(fn, fn, source=node, target=node)
    start = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
    position = {i: k for k, i in enumerate(idxs)}
    classes = _Classes(len(idxs))
    merged: dict[tuple, tuple[Dependency, dict[int, _helpers._HybridIndex]]] = {}
    done: dict[tuple, set] = {}  # (node, handler) -> the indices already walked on from it
    stack = [(root, start)]
    while stack:
        dep, hidx = stack.pop()
        key = (dep.target, dep.handler)
        walked = done.setdefault(key, set())
        hidx = [h for h in hidx if h not in walked]
        if not hidx:
            continue
        walked.update(hidx)
        if reached is not None and graph.is_out_channel_pruning_fn(dep.handler):
            reached.add(dep.target.module)
        item = merged.setdefault(key, (dep, {}))[1]
        for h in hidx:
            first = item.setdefault(h.idx, h)
            if first.root_idx != h.root_idx and None not in (first.root_idx, h.root_idx):
                classes.join(position[first.root_idx], position[h.root_idx])
        # Every index map works index by index, so walking on with the new ones only
        # reaches the same layers and channels as walking every path in full.
        for new_dep in dep.target.dependencies:
            if not new_dep.is_triggered_by(dep.handler):
                continue
            new = hidx
            for mapping in new_dep.index_mapping:
                if mapping is not None:
                    new = mapping(new)
            if len(new):
                stack.append((new_dep, list(new)))
    group = Group()
    ignored_params = getattr(graph, "ignored_params", [])
    for dep, item in merged.values():
        if isinstance(dep.target.module, nn.Parameter) and any(
                dep.target.module is p for p in ignored_params):
            continue
        hidx = list(item.values())
        entry = _helpers.GroupItem(dep, _helpers.to_plain_idxs(hidx))
        entry.root_idxs = _helpers.to_root_idxs(hidx)
        group._group.append(entry)
    group._DG = graph
    return group, classes.classes()


def all_groups(graph: tp.DependencyGraph, ignored: list[nn.Module],
               root_types: tuple[type, ...]) -> Iterator[tuple[Group, list[list[int]]]]:
    """Every group rooted at a ``root_types`` layer, as ``get_all_groups`` finds them.

    A group whose walk fails (an index map Torch-Pruning built for a split it could not
    size, as in ShuffleNet's ``chunk``) is skipped, not a crash: its layers stay unpruned,
    and so do the layers whose outputs that walk had reached — they share its channels, so
    walking again from each of them only fails again (ShuffleNet V2: 20 CPU-s per prune).
    """
    index_mapping.update_index_mapping(graph)
    skip = set(ignored) | set(graph.IGNORED_LAYERS_IN_TRACING)
    visited: set[nn.Module] = set()
    for m in list(graph.module2node):
        if m in skip or not isinstance(m, root_types) or m in visited:
            continue
        pruner = graph.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        reached: set = set()
        try:
            found = pruning_group(graph, m, pruner.prune_out_channels,
                                  list(range(pruner.get_out_channels(m))), reached)
        except (IndexError, ZeroDivisionError):
            found = None
        # The layers whose outputs the walk reached: the group's output layers when it
        # succeeds, those it had got to when it failed. None is a root again.
        layers = {r for r in reached if isinstance(r, nn.Module)}
        visited |= layers
        if found is not None and not layers & skip:
            yield found


def cut_group(graph: tp.DependencyGraph, tp_group, removed: list[int]) -> None:
    """Remove group channels ``removed`` from every layer of ``tp_group`` (in place).

    Torch-Pruning's ``Group.prune(idxs)`` with the walk above; a group nasprune cuts itself
    (:class:`~nasprune.pruning.surgery.OwnGroup`) cuts its own layers.
    """
    if not isinstance(tp_group, Group):
        tp_group.prune(removed)
        return
    index_mapping.update_index_mapping(graph)  # earlier cuts moved concat offsets
    first = tp_group[0].dep
    group, _ = pruning_group(graph, first.target.module, first.handler, list(removed))
    group.prune(record_history=False)


__all__ = ["all_groups", "cut_group", "pruning_group"]
