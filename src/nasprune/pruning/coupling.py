"""Group channels that share one layer channel, so they can only be removed together.

Torch-Pruning merges every path of a group into one channel map per layer and keeps, for a
layer channel reached from several group channels, only the first. GhostNet's
``cat(primary, depthwise(primary))`` is the common case: group channel ``j`` reaches the
primary conv's channel ``j`` directly and group channel ``C/2 + j`` reaches it through the
depthwise "cheap" conv. Removing one of the two but not the other cuts different channels
from the primary conv and its BatchNorm, and a ratio of 0.5 can empty the primary conv.

:func:`~nasprune.pruning.grouping.pruning_group` walks the group's dependencies and joins
the group channels that meet in one layer channel; :func:`class_layout` says when the classes
are blocks a pruning plan can honour (``j, j + C/s, ...``: remove the same offsets from every
block of ``C/s``) and when the group must be left alone.
"""

from __future__ import annotations


def class_layout(classes: list[list[int]], channels: int) -> int | None:
    """The number of blocks ``s`` when every class is ``{j, j + C/s, ..., j + (s-1)C/s}``.

    1 for no classes; None when the classes are any other shape (the group cannot be pruned
    without emptying or scrambling a layer, and is left alone).
    """
    if not classes:
        return 1
    s = len(classes[0])
    if channels % s or len(classes) * s != channels:
        return None
    block = channels // s
    for c in classes:
        if len(c) != s or c != [c[0] + k * block for k in range(s)]:
            return None
    return s


def coupled_limits(classes: list[list[int]], limits: tuple[int, bool] | None,
                   channels: int) -> tuple[int, bool] | None:
    """``constraints``' ``(divisor, aligned)`` with the group's coupled classes folded in.

    Blocks of coupled channels become aligned blocks (divisor = blocks per class); a group
    that has both those and conv-group or head blocks, or irregular classes, is refused.
    """
    if limits is None:
        return None
    blocks = class_layout(classes, channels)
    if blocks is None or (blocks > 1 and limits[0] > 1):
        return None
    return (blocks, True) if blocks > 1 else limits


__all__ = ["class_layout", "coupled_limits"]
