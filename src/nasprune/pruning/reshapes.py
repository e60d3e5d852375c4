"""Channel shuffles and slices whose channel map Torch-Pruning gets wrong.

ShuffleNet's ``view(n, g, c/g, h, w) → transpose(1, 2) → view(n, c, h, w)`` permutes the
channels. Torch-Pruning's reshape rule knows flattens only; on a shuffle it divides by a
channel count of 0 (``ZeroDivisionError`` while building the graph), and where it does not,
it ties the channels on both sides one to one, which a permutation is not.

Its slice rule takes dimension 1 of any 4-D tensor for channels; LeViT's token downsampling
``x.view(b, h, w, c)[:, ::2, ::2]`` slices rows, and the rule halved the channels of the
next layer's input. A slice whose dimension is not as long as the channels reaching it is
left unmapped (rows and columns do not change which channel is which).

:func:`install` wraps both rules once: a reshape it cannot map is marked on its graph node
(``nasprune_scrambled``) instead of crashing the trace, and :func:`scrambled` tells
:func:`~nasprune.pruning.graph.iter_tp_groups` to leave alone every group whose channels
pass through one. Widths inside the shuffled branches (a ShuffleNet unit's 1×1 → depthwise
→ 1×1 middle) never cross a shuffle and stay prunable.
"""

from __future__ import annotations

import functools

from torch_pruning.dependency import index_mapping, shape_infer


def _guarded(update):
    @functools.wraps(update)
    def wrapper(graph, node) -> None:
        try:
            update(graph, node)
        except ZeroDivisionError:  # a reshape that moves channels across a split dimension
            node.nasprune_scrambled = True

    wrapper.nasprune_guard = True
    return wrapper


def _sliced_channels(graph, node) -> bool:
    """Whether a slice node cuts along a dimension as long as the channels reaching it."""
    fn = node.grad_fn
    sizes, dim = getattr(fn, "_saved_self_sym_sizes", None), getattr(fn, "_saved_dim", None)
    if sizes is None or not isinstance(dim, int) or not 0 <= dim < len(sizes):
        return True  # nothing to check against: Torch-Pruning's own rule decides
    for n in node.inputs:
        channels = shape_infer.infer_out_channels_recursively(graph, n, [0])
        if channels:
            return int(sizes[dim]) == channels
    return True


def _slice_guarded(update):
    @functools.wraps(update)
    def wrapper(graph, node) -> None:
        if _sliced_channels(graph, node):
            update(graph, node)

    wrapper.nasprune_guard = True
    return wrapper


def install() -> None:
    """Wrap Torch-Pruning's reshape and slice rules (idempotent)."""
    for name, guard in (("update_reshape_index_mapping", _guarded),
                        ("update_slice_index_mapping", _slice_guarded)):
        rule = getattr(index_mapping, name)
        if not getattr(rule, "nasprune_guard", False):
            setattr(index_mapping, name, guard(rule))


def scrambled(tp_group) -> bool:
    """Whether the group's channels pass through a reshape marked by the guard."""
    return any(getattr(item.dep.target, "nasprune_scrambled", False)
               or getattr(item.dep.source, "nasprune_scrambled", False)
               for item in tp_group.items)


__all__ = ["install", "scrambled"]
