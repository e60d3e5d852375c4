"""Dependency groups: channels that must be removed together.

Wraps Torch-Pruning's DepGraph (CVPR 2023) so no other module imports it. A group is
rooted at a conv or linear layer; it holds every layer whose output channels (``out_layers``)
or input channels (``in_layers``) are tied to the root's output channels — its BatchNorm,
the next layers' inputs, every layer joined by a residual add, slices of a concat.
Each layer's share of a group, and when a group can be pruned exactly, are in
:mod:`nasprune.pruning.members` (``Member``, ``members``, ``constraints`` re-exported here).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from nasprune.errors import NaspruneError
from nasprune.pruning.attention import CHANNELS, classify
from nasprune.pruning.conv1d import conv1d_units
from nasprune.pruning.coupling import coupled_limits
from nasprune.pruning.flow import Flow, tensors_in, trace_flow
from nasprune.pruning.fused_qkv import (
    fused_inputs,
    fused_projections,
    fused_units,
    mark_fused_ffn,
    refuse_unsupported,
)
from nasprune.pruning.gqa import gqa_projections, gqa_units, mark_ffn
from nasprune.pruning.grouping import all_groups
from nasprune.pruning.kv_cache import no_kv_cache, without_cache_flag
from nasprune.pruning.members import CONV_TYPES, Member, constraints, members
from nasprune.pruning.mha import split_copy
from nasprune.pruning.reshapes import install as _guard_reshapes
from nasprune.pruning.reshapes import scrambled
from nasprune.pruning.window_attention import window_inputs, window_types, window_units

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_guard_reshapes()  # channel shuffles: marked, not a ZeroDivisionError (pruning/reshapes.py)


@dataclass
class ChannelGroup:
    """One prunable group: a stable name (its root layer), channel count and member layers."""

    name: str
    channels: int
    out_layers: list[str]
    in_layers: list[str]
    other_layers: list[str] = field(default_factory=list)  # BN, attention, PReLU, ...
    # Kept channels must be a multiple of this: grouped convs keep every conv group equally
    # wide and attention keeps every head equally wide; a head group ("heads") keeps whole
    # heads (divisor = head size). 1 for ordinary groups.
    divisor: int = 1
    # What the channels are: "channels", "heads" (one attention layer's heads, named after
    # it) or "ffn" (a Transformer feed-forward width); see nasprune.pruning.attention.
    kind: str = CHANNELS
    # Remove the same offsets from every block of channels // divisor (a grouped conv's
    # input, GhostNet's coupled halves; see nasprune.pruning.coupling).
    aligned: bool = False

    def kept(self, ratio: float, round_to: Steps = None, min_channels: int = 1) -> int:
        """Channels this group keeps at prune ratio ``ratio`` (``kept_channels`` + divisor);
        ``round_to`` may be one step for all groups or a dict group name → step."""
        return kept_channels(self.channels, ratio, step_of(round_to, self.name), min_channels,
                             self.divisor)

    @property
    def layers(self) -> list[str]:
        seen: dict[str, None] = {}
        for n in self.out_layers + self.in_layers + self.other_layers:
            seen.setdefault(n, None)
        return list(seen)


# A width step for every group (an int, or None for 1), or one per group name: the widths
# at which a runtime's kernels are fast differ between layer shapes (nasprune.search.widths).
Steps = int | Mapping[str, int] | None


def step_of(round_to: Steps, name: str) -> int | None:
    """Group ``name``'s width step under ``round_to`` (groups a dict leaves out: None)."""
    if isinstance(round_to, Mapping):
        return round_to.get(name)
    return round_to


def check_steps(round_to: Steps, names: list[str] | None = None) -> None:
    """One clear error for a bad ``round_to``: not a positive int, or (given the model's
    group ``names``) a dict naming a group the model does not have."""
    steps = round_to.values() if isinstance(round_to, Mapping) else [round_to]
    for v in steps:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NaspruneError(f"round_to must be a positive integer, None or a dict of "
                                f"group name → positive integer, got {round_to!r}")
    if isinstance(round_to, Mapping) and names is not None:
        from nasprune.registry import did_you_mean

        unknown = [k for k in round_to if k not in names]
        if unknown:
            raise NaspruneError(f"round_to names no prunable group '{unknown[0]}': "
                                f"{did_you_mean(str(unknown[0]), names)}")


def kept_channels(
    channels: int,
    ratio: float,
    round_to: int | None = None,
    min_channels: int = 1,
    divisor: int = 1,
) -> int:
    """How many of ``channels`` survive pruning a fraction ``ratio`` — the one rounding rule.

    The search's analytic cost model and the real surgery both call this, so the two agree.
    Ratio 0 keeps every channel (rounding never prunes an untouched group). ``divisor``
    (``ChannelGroup.divisor``) forces a multiple of the conv groups / attention heads.
    """
    if ratio <= 0:
        return channels
    step = math.lcm(round_to or 1, divisor)
    keep = int(round(channels * (1.0 - ratio)))
    if step > 1:
        keep = step * max(1, int(round(keep / step)))
    keep = max(min(keep, channels), min(min_channels, channels), 1)
    if divisor > 1:  # min_channels may have broken the multiple: round up (channels is one)
        keep = min(channels, -(-keep // divisor) * divisor)
    return keep


def call(model: nn.Module, example_inputs: Any) -> Any:
    """Run ``model`` on example inputs: a tensor, a tuple of positional inputs, or a dict of
    keyword arguments (Hugging Face style)."""
    if isinstance(example_inputs, torch.Tensor):
        return model(example_inputs)
    if isinstance(example_inputs, Mapping):
        return model(**example_inputs)
    return model(*tuple(example_inputs))


def last_layers(model: nn.Module, example_inputs) -> list[nn.Module]:
    """The layers that produce the model's output (the classifier): never pruned.

    Found by running the model once: the last conv/linear that executed, plus any whose
    output tensor is returned as is (extra heads). Raises NaspruneError when the model does
    not run on ``example_inputs`` or returns no tensor.
    """
    return _probe(model, example_inputs)[0]


def _probe(model: nn.Module, example_inputs) -> tuple[list[nn.Module], list[tuple[int, ...]]]:
    """Run the model once: its output layers and the shapes of its output tensors."""
    order: list[tuple[nn.Module, object]] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append((mod, o)))
        for m in model.modules()
        if isinstance(m, PRUNABLE_TYPES)
    ]
    try:
        with torch.no_grad():
            out = call(model, example_inputs)
    except Exception as exc:  # the user's forward can raise anything; name it once
        raise NaspruneError(
            f"model cannot be traced for pruning: its forward failed on the example input: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for h in hooks:
            h.remove()
    outputs = tensors_in(out)
    if not outputs:
        raise NaspruneError(
            f"model cannot be traced for pruning: it returned {type(out).__name__}, not a tensor"
        )
    out_ids = {id(t) for t in outputs}
    heads = [m for m, o in order if isinstance(o, torch.Tensor) and id(o) in out_ids]
    heads += [order[-1][0]] if order else []
    return list(dict.fromkeys(heads)), [tuple(t.shape) for t in outputs]


def output_shapes(model: nn.Module, example_inputs) -> list[tuple[int, ...]]:
    """Shapes of every tensor the model returns (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [tuple(t.shape) for t in tensors_in(call(model, example_inputs))]
    finally:
        model.train(was_training)


def _forward_hooks(model: nn.Module) -> dict[nn.Module, set]:
    return {m: set(m._forward_hooks) for m in model.modules()}


def build_graph(model: nn.Module, example_inputs) -> tp.DependencyGraph:
    """Trace ``model`` once and build its dependency graph (model in eval mode while tracing).

    The layers producing the model's output are stored on the graph (``nasprune_heads``) so
    ``iter_tp_groups`` never prunes them: the last layer that ran, those returned as is, and
    (:mod:`nasprune.pruning.flow`) those whose output reaches any returned tensor — in a list
    or dict too — without passing another prunable layer, or feeds no prunable layer.
    """
    refuse_unsupported(model)
    was_training = model.training
    model.eval()
    before = _forward_hooks(model)
    # DepGraph traces through autograd: a frozen layer would drop out of the graph.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    example_inputs = without_cache_flag(example_inputs)
    with no_kv_cache(model):
        try:
            heads, shapes = _probe(model, example_inputs)
            for p in frozen:
                p.requires_grad_(True)
            flow = trace_flow(model, lambda: call(model, example_inputs), PRUNABLE_TYPES)
            with torch.enable_grad(), warnings.catch_warnings():
                # Torch-Pruning's notice that it cuts parameters outside a layer along their
                # last dimension: right for position embeddings, class tokens and RMSNorm
                # weights (channels last), HF Conv1D weights are cut by nasprune; repeated
                # for every trial of a search it would bury the search's own output.
                warnings.filterwarnings("ignore", "Unwrapped parameters detected")
                graph = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_inputs, output_transform=tensors_in,
                    customized_pruners=window_types(model))  # Swin attention: one node
        except NaspruneError:
            raise
        except Exception as exc:  # tracing failures come in many types; name the cause once
            # Torch-Pruning leaves its tracing hooks behind when the forward raises.
            for m, keys in before.items():
                for k in set(m._forward_hooks) - keys:
                    del m._forward_hooks[k]
            raise NaspruneError(
                f"model cannot be traced for pruning: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            model.train(was_training)
            for p in frozen:
                p.requires_grad_(False)
    graph.nasprune_heads = list(dict.fromkeys(heads + flow.heads))
    graph.nasprune_flow = flow
    graph.nasprune_output_shapes = shapes
    return graph


def ignored_names(model: nn.Module, ignored: Iterable[str | nn.Module] | None) -> list[str]:
    """``ignored`` as layer names of ``model``: module objects become their names.

    Names survive the copy that pruning works on, module objects do not: ``prune`` turns
    them into names before copying. A module that is not part of the model is an error.
    """
    if isinstance(ignored, (str, nn.Module)):
        ignored = [ignored]
    names = {id(m): n for n, m in model.named_modules()}
    out: list[str] = []
    for item in ignored or ():
        if isinstance(item, nn.Module):
            if id(item) not in names:
                raise NaspruneError(f"ignored module {type(item).__name__} is not part of "
                                    "the model being pruned")
            out.append(names[id(item)])
        else:
            out.append(item)
    return out


def resolve_ignored(model: nn.Module, ignored: Iterable[str | nn.Module] | None) -> list[nn.Module]:
    """The modules to leave alone: named or given layers and, for a container (a block,
    ``"roi_heads"``), every layer inside it. Unknown names are a user error."""
    named = dict(model.named_modules())
    out: list[nn.Module] = []
    for item in ignored_names(model, ignored):
        if item not in named:
            from nasprune.registry import did_you_mean

            hint = did_you_mean(str(item), [n for n in named if n])
            raise NaspruneError(f"ignored layer '{item}' does not exist in the model: {hint}")
        out.extend(named[item].modules())
    return list(dict.fromkeys(out))


def iter_tp_groups(
    model: nn.Module,
    graph: tp.DependencyGraph,
    example_inputs,
    ignored: Iterable[str | nn.Module] | None = None,
):
    """Yield ``(ChannelGroup, tp_group)`` pairs for every prunable group of ``model``.

    Groups that touch the output layers or ``ignored`` layers, groups that cannot be
    pruned exactly (see ``constraints``) and a Transformer's hidden width (see
    :func:`~nasprune.pruning.attention.classify`) are left out.
    """
    names = {m: n for n, m in model.named_modules()}
    position = {n: i for i, n in enumerate(names.values())}
    heads = getattr(graph, "nasprune_heads", None)
    if heads is None:
        heads, shapes = _probe(model, example_inputs)
    skip = resolve_ignored(model, ignored) + list(heads)
    # Rotary/GQA and fused-qkv attention: their heads are cut in gqa.py / fused_qkv.py.
    own_cut = gqa_projections(model) + fused_projections(model)
    found = []
    flow: Flow = getattr(graph, "nasprune_flow", None) or Flow()
    for g, classes in all_groups(graph, skip + own_cut, PRUNABLE_TYPES):
        if scrambled(g):
            continue
        root = g[0].dep.target.module
        channels = int(graph.get_out_channels(root))
        group_members = members(model, graph, g)
        limits = coupled_limits(classes, constraints(group_members, channels), channels)
        if limits is None or flow.untied([m.module for m in group_members if m.role == "out"],
                                         {m.module for m in group_members}):
            continue
        out_l, in_l, other = [], [], []
        for m in group_members:
            if isinstance(m.module, PRUNABLE_TYPES):
                (out_l if m.role == "out" else in_l).append(m.name)
            else:
                other.append(m.name)
        dedup = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
        out_l = sorted(dedup(out_l), key=position.__getitem__)
        info = ChannelGroup(
            # Named after its first layer in definition order: stable across runs and copies.
            name=out_l[0] if out_l else names[root],
            channels=channels,
            out_layers=out_l,
            in_layers=dedup(in_l),
            other_layers=dedup(other),
            divisor=limits[0],
            aligned=limits[1],
        )
        found.append((info, g))
    mark_ffn(model, found)
    mark_fused_ffn(model, found)
    yield from classify(model, found, fused_inputs(model) + window_inputs(model))
    yield from gqa_units(model, skip)
    yield from fused_units(model, skip)
    yield from window_units(model, skip)
    yield from conv1d_units(model, skip)  # GPT-2 style: layers DepGraph does not know


def groups(
    model: nn.Module,
    example_inputs,
    ignored: Iterable[str | nn.Module] | None = None,
) -> list[ChannelGroup]:
    """List the prunable channel groups of ``model`` (the model is not modified).

    ``nn.MultiheadAttention`` layers are listed as pruning sees them: one head group each
    (:mod:`nasprune.pruning.mha`).
    """
    ignored = ignored_names(model, ignored)  # module objects do not survive the copy
    model = split_copy(model)
    graph = build_graph(model, example_inputs)
    found = [info for info, _ in iter_tp_groups(model, graph, example_inputs, ignored)]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(found, key=lambda g: order.get(g.name, len(order)))


__all__ = ["CONV_TYPES", "PRUNABLE_TYPES", "ChannelGroup", "Member", "build_graph",
           "constraints", "groups", "iter_tp_groups", "kept_channels", "last_layers",
           "ignored_names", "members", "output_shapes", "resolve_ignored"]
