"""Channel shuffles and other reshapes whose channel map Torch-Pruning cannot work out.

ShuffleNet's ``view(n, g, c/g, h, w) → transpose(1, 2) → view(n, c, h, w)`` permutes the
channels. Torch-Pruning's reshape rule knows flattens only; on a shuffle it divides by a
channel count of 0 (``ZeroDivisionError`` while building the graph), and where it does not,
it ties the channels on both sides one to one, which a permutation is not.

:func:`install` wraps that rule once: a reshape it cannot map is marked on its graph node
(``nasprune_scrambled``) instead of crashing the trace, and :func:`scrambled` tells
:func:`~nasprune.pruning.graph.iter_tp_groups` to leave alone every group whose channels
pass through one. Widths inside the shuffled branches (a ShuffleNet unit's 1×1 → depthwise
→ 1×1 middle) never cross a shuffle and stay prunable.
"""

from __future__ import annotations

import functools

from torch_pruning.dependency import index_mapping


def _guarded(update):
    @functools.wraps(update)
    def wrapper(graph, node) -> None:
        try:
            update(graph, node)
        except ZeroDivisionError:  # a reshape that moves channels across a split dimension
            node.nasprune_scrambled = True

    wrapper.nasprune_guard = True
    return wrapper


def install() -> None:
    """Wrap Torch-Pruning's reshape rule (idempotent)."""
    if not getattr(index_mapping.update_reshape_index_mapping, "nasprune_guard", False):
        index_mapping.update_reshape_index_mapping = _guarded(
            index_mapping.update_reshape_index_mapping)


def scrambled(tp_group) -> bool:
    """Whether the group's channels pass through a reshape marked by the guard."""
    return any(getattr(item.dep.target, "nasprune_scrambled", False)
               or getattr(item.dep.source, "nasprune_scrambled", False)
               for item in tp_group.items)


__all__ = ["install", "scrambled"]
