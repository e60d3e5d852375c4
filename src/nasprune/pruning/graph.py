"""Dependency groups: channels that must be removed together.

Wraps Torch-Pruning's DepGraph (CVPR 2023) so no other module imports it. A group is
rooted at a conv or linear layer; it holds every layer whose output channels (``out_layers``)
or input channels (``in_layers``) are tied to the root's output channels — its BatchNorm,
the next layers' inputs, every layer joined by a residual add, slices of a concat.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from nasprune.errors import NaspruneError

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class ChannelGroup:
    """One prunable group: a stable name (its root layer), channel count and member layers."""

    name: str
    channels: int
    out_layers: list[str]
    in_layers: list[str]
    other_layers: list[str] = field(default_factory=list)  # BN, activations with params, ...

    @property
    def layers(self) -> list[str]:
        seen: dict[str, None] = {}
        for n in self.out_layers + self.in_layers + self.other_layers:
            seen.setdefault(n, None)
        return list(seen)


def kept_channels(
    channels: int, ratio: float, round_to: int | None = None, min_channels: int = 1
) -> int:
    """How many of ``channels`` survive pruning a fraction ``ratio`` — the one rounding rule.

    The search's analytic cost model and the real surgery both call this, so the two agree.
    """
    keep = int(round(channels * (1.0 - ratio)))
    if round_to and round_to > 1:
        keep = round_to * max(1, int(round(keep / round_to)))
    return max(min(keep, channels), min(min_channels, channels), 1)


def _as_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


def last_layers(model: nn.Module, example_inputs) -> list[nn.Module]:
    """The layers that produce the model's output (the classifier): never pruned.

    Found by running the model once and taking the last conv/linear that executed.
    """
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, PRUNABLE_TYPES)
    ]
    try:
        with torch.no_grad():
            model(*_as_tuple(example_inputs))
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def build_graph(model: nn.Module, example_inputs) -> tp.DependencyGraph:
    """Trace ``model`` once and build its dependency graph (model in eval mode while tracing)."""
    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    except NaspruneError:
        raise
    except Exception as exc:  # tracing failures come in many types; name the cause once
        raise NaspruneError(f"model cannot be traced for pruning: {type(exc).__name__}: {exc}")
    finally:
        model.train(was_training)


def resolve_ignored(model: nn.Module, ignored: Iterable[str | nn.Module] | None) -> list[nn.Module]:
    """Turn layer names or modules into modules; unknown names are a user error."""
    named = dict(model.named_modules())
    out: list[nn.Module] = []
    for item in ignored or ():
        if isinstance(item, nn.Module):
            out.append(item)
        elif item in named:
            out.append(named[item])
        else:
            raise NaspruneError(f"ignored layer '{item}' does not exist in the model")
    return out


def iter_tp_groups(
    model: nn.Module,
    graph: tp.DependencyGraph,
    example_inputs,
    ignored: Iterable[str | nn.Module] | None = None,
):
    """Yield ``(ChannelGroup, tp_group)`` pairs for every prunable group of ``model``."""
    names = {m: n for n, m in model.named_modules()}
    position = {n: i for i, n in enumerate(names.values())}
    skip = resolve_ignored(model, ignored) + last_layers(model, example_inputs)
    for g in graph.get_all_groups(ignored_layers=skip, root_module_types=PRUNABLE_TYPES):
        root = g[0].dep.target.module
        out_l, in_l, other = [], [], []
        for dep, _ in g:
            mod = dep.target.module
            if not isinstance(mod, nn.Module) or mod not in names:
                continue
            name = names[mod]
            if isinstance(mod, PRUNABLE_TYPES):
                (out_l if graph.is_out_channel_pruning_fn(dep.handler) else in_l).append(name)
            else:
                other.append(name)
        dedup = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
        out_l = sorted(dedup(out_l), key=position.__getitem__)
        info = ChannelGroup(
            # Named after its first layer in definition order: stable across runs and copies.
            name=out_l[0] if out_l else names[root],
            channels=int(graph.get_out_channels(root)),
            out_layers=out_l,
            in_layers=dedup(in_l),
            other_layers=dedup(other),
        )
        yield info, g


def groups(
    model: nn.Module,
    example_inputs,
    ignored: Iterable[str | nn.Module] | None = None,
) -> list[ChannelGroup]:
    """List the prunable channel groups of ``model`` (the model is not modified)."""
    graph = build_graph(model, example_inputs)
    found = [info for info, _ in iter_tp_groups(model, graph, example_inputs, ignored)]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(found, key=lambda g: order.get(g.name, len(order)))
