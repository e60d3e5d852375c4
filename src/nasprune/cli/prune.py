"""``nasprune prune``: structured (channels) or unstructured (threshold) pruning of a
checkpoint, saved as a new checkpoint with its costs before and after."""

from __future__ import annotations

import argparse
from typing import Any

from nasprune.cli._flags import add_checkpoint, add_data, add_out, add_task, load_task_flags
from nasprune.errors import NaspruneError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a checkpoint (remove channels or zero weights) "
                       "and save the result")
    add_checkpoint(p, "model to prune (optional when --task returns a model)",
                   required=False)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ratio", type=float, metavar="R",
                     help="remove this fraction of the channels of every group")
    how.add_argument("--ratios", metavar="FILE.json",
                     help="per-group prune ratios {group: ratio} (e.g. from `nasprune search`)")
    how.add_argument("--global", dest="global_target", type=float, metavar="T",
                     help="remove this fraction of all channels, least important first across "
                     "the whole network")
    how.add_argument("--threshold-sparsity", type=float, metavar="S",
                     help="unstructured: zero this fraction of the conv/linear weights")
    how.add_argument("--threshold", type=float, metavar="T",
                     help="unstructured: zero weights with |w| < T (× std(w) with --scope layer)")
    p.add_argument("--criterion", default="l1",
                   help="channel importance: l1, l2, fpgm, bn_scale, taylor, random")
    p.add_argument("--round-to", type=int, default=None, metavar="N",
                   help="keep channel counts multiples of N (hardware friendly)")
    p.add_argument("--min-channels", type=int, default=1, metavar="N")
    p.add_argument("--ignore", nargs="+", default=None, metavar="LAYER",
                   help="layers never to prune")
    p.add_argument("--scope", default="global", choices=("global", "layer"),
                   help="threshold pruning: one cut for all layers or one per layer")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="model input shape, if the checkpoint does not record it")
    add_data(p, "data set (needed by --criterion taylor; also gives the input shape)")
    add_task(p)
    p.add_argument("--seed", type=int, default=0)
    add_out(p, "DIR", "where to save the result", required=True)
    p.set_defaults(func=cmd_prune)


def _find_key(doc: object, key: str, depth: int = 2) -> Any:
    """``doc[key]`` in a dict or in its nested dicts (checkpoint meta has no fixed layout)."""
    if not isinstance(doc, dict):
        return None
    if doc.get(key) is not None:
        return doc[key]
    for v in doc.values() if depth > 0 else ():
        found = _find_key(v, key, depth - 1)
        if found is not None:
            return found
    return None


def _prune_input_shape(args: argparse.Namespace, meta: dict | None,
                       data: Any) -> tuple[int, ...]:
    """``--input-shape``, else the data set's, else the one the checkpoint records."""
    text = args.input_shape
    if text is not None:
        try:
            shape = tuple(int(v) for v in text.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise NaspruneError(f"--input-shape must look like 3,32,32, got '{text}'")
        return shape
    if data is not None:
        return tuple(data.input_shape)
    found = _find_key(meta, "input_shape")
    if isinstance(found, list) and found and all(isinstance(v, int) and v > 0 for v in found):
        return tuple(found)
    raise NaspruneError("the checkpoint does not record its input shape: pass "
                        "--input-shape C,H,W (or --data NAME)")


def _ratios_doc(path: str) -> tuple[dict, int | dict | None]:
    """The ``{group: ratio}`` of a ratios file, a search result or a spec's pruning record,
    and the ``round_to`` a search recorded beside them."""
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise NaspruneError(f"ratios file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NaspruneError(f"cannot read ratios from '{path}': {exc}") from exc
    round_to = None
    if isinstance(doc, dict) and isinstance(doc.get("ratios"), dict):
        # The width step(s) the search measured and used: one int or {group: step}.
        round_to = doc.get("round_to")
        if round_to is not None:
            from nasprune.pruning.graph import check_steps

            try:
                check_steps(round_to)
            except NaspruneError as exc:
                raise NaspruneError(f"'{path}': {exc}") from None
        doc = doc["ratios"]  # a search result or a spec's pruning record
    if not isinstance(doc, dict) or not doc:
        raise NaspruneError(f"'{path}' must hold a JSON object {{group name: prune ratio}}")
    return doc, round_to


def _costs(model: Any, x: Any, shape: tuple[int, ...]) -> dict:
    """MACs, parameters and size of the unpruned model (a wrong input shape: one error)."""
    from nasprune.metrics import count_macs, count_params, model_size_mb

    try:
        macs = count_macs(model, x)
    except RuntimeError as exc:  # --input-shape / --data not what the model was built for
        raise NaspruneError(f"the model does not accept inputs of shape {shape}: "
                            f"{str(exc).strip().splitlines()[0]}") from exc
    return {"macs": macs, "params": count_params(model), "size_mb": model_size_mb(model)}


def _apply(args: argparse.Namespace, model: Any, x: Any, ratios: dict | None,
           data: Any) -> tuple[Any, dict]:
    """Prune ``model`` as the flags say; returns it and its costs after."""
    from nasprune.metrics import count_macs, count_params, model_size_mb, sparse_size_mb

    if args.threshold_sparsity is not None or args.threshold is not None:
        from nasprune.pruning.unstructured import threshold

        report = threshold(model, sparsity=args.threshold_sparsity, threshold=args.threshold,
                           scope=args.scope, layers=None, example_inputs=x)
        print(report)
        return model, {"macs": report.sparse_macs, "params": count_params(model),
                       "size_mb": sparse_size_mb(model), "sparsity": report.sparsity}
    from nasprune.pruning import prune

    how = (ratios if ratios is not None else
           "global" if args.global_target is not None else args.ratio)
    pruned = prune(model, x, how, criterion=args.criterion, round_to=args.round_to,
                   min_channels=args.min_channels, ignored=args.ignore, data=data,
                   global_target=args.global_target, seed=args.seed)
    return pruned, {"macs": count_macs(pruned, x), "params": count_params(pruned),
                    "size_mb": model_size_mb(pruned)}


def _cost_line(label: str, before: str, after: str) -> str:
    return f"  {label:<15} {before:>14} → {after:>14}"


def _print_costs(before: dict, after: dict) -> None:
    sparse = "sparse " if "sparsity" in after else ""
    print(_cost_line(f"{sparse}MACs", f"{before['macs']:,}", f"{after['macs']:,}")
          + f"  ({after['macs'] / max(before['macs'], 1):.1%})")
    print(_cost_line("params", f"{before['params']:,}", f"{after['params']:,}")
          + f"  ({after['params'] / max(before['params'], 1):.1%})")
    print(_cost_line(f"{sparse}size MB", f"{before['size_mb']:.3f}", f"{after['size_mb']:.3f}")
          + f"  ({after['size_mb'] / max(before['size_mb'], 1e-12):.1%})")


def _from_task(args: argparse.Namespace, loaded: Any) -> tuple[Any, Any, Any, dict]:
    """``--task``: ``(model, example input, task, meta)``; the input is the task's own (its
    first validation batch), and the task serves data-driven criteria (taylor)."""
    from nasprune.task import example_inputs

    if args.input_shape is not None:
        raise NaspruneError("--input-shape does not apply with --task: the task's first "
                            "validation batch gives the input")
    model = loaded.model_from(args.checkpoint)
    x = example_inputs(loaded.task)
    shape = tuple(x.shape[1:]) if hasattr(x, "shape") else None
    meta = {**loaded.record(), **({"input_shape": list(shape)} if shape else {})}
    return model, x, loaded.task, meta


def _from_checkpoint(args: argparse.Namespace) -> tuple[Any, Any, Any, dict]:
    """``(model, example input, data set or None, meta to keep)`` of ``--checkpoint``."""
    import torch

    from nasprune.checkpoint import load, read_spec

    if args.checkpoint is None:
        raise NaspruneError("--checkpoint DIR is required (or --task MODULE:FUNCTION "
                            "returning a model)")
    meta = read_spec(args.checkpoint).get("meta") or {}
    model = load(args.checkpoint)
    data = None
    if args.data is not None:
        from nasprune.data import load_dataset

        data = load_dataset(args.data, root=args.data_dir, seed=args.seed)
    shape = _prune_input_shape(args, meta, data)
    keep = {k: meta[k] for k in ("data", "seed", "num_classes") if k in meta}
    return model, torch.randn(1, *shape), data, {**keep, "input_shape": list(shape)}


def cmd_prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nasprune.checkpoint import save

    out = Path(args.out)
    if args.checkpoint is not None and Path(args.checkpoint).resolve() == out.resolve():
        raise NaspruneError("--out must differ from --checkpoint (the original is kept)")
    ratios, recorded = _ratios_doc(args.ratios) if args.ratios else (None, None)  # fail early
    if args.round_to is None and recorded is not None:
        args.round_to = recorded  # the search's widths, unless --round-to says otherwise
    loaded = load_task_flags(args)
    model, x, data, meta = (_from_task(args, loaded) if loaded is not None
                            else _from_checkpoint(args))
    src = args.checkpoint or f"the model of {loaded.spec}"
    shape = tuple(meta.get("input_shape") or ()) or "the task's inputs"
    before = _costs(model, x, shape)
    pruned, after = _apply(args, model, x, ratios, data)
    save(pruned, out, meta={**meta, "pruned_from": str(src), "before": before,
                            "after": after})
    print(f"pruned {src} → {out}")
    _print_costs(before, after)
    if loaded is None:
        print(f"not fine-tuned yet; next: nasprune finetune --checkpoint {out} --teacher {src}")
    else:
        print(f"not fine-tuned yet; next: nasprune finetune --task {loaded.spec} "
              f"--checkpoint {out} (with the same --task-arg values)")
    return 0
