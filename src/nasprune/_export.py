"""``export``: a model as ONNX or TorchScript for deployment, written atomically.

Re-exported as :func:`nasprune.checkpoint.export` (and ``nasprune.export``).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from nasprune._io import atomic_path
from nasprune.errors import NaspruneError

EXPORT_FORMATS = ("onnx", "torchscript")


def export(model: nn.Module, path: str | os.PathLike, example_inputs,
           format: str = "onnx") -> Path:  # noqa: A002  (the contract's argument name)
    """Export ``model`` (a CPU copy in eval mode) to ONNX or TorchScript at ``path``.

    ONNX uses the TorchScript-based exporter (``dynamo=False``: the dynamo exporter needs
    ``onnxscript``) with opset 17 and a dynamic batch dimension.
    """
    if format not in EXPORT_FORMATS:
        raise NaspruneError(f"unknown export format '{format}': choose from "
                            f"{', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(
        example_inputs)
    inputs = tuple(x.detach().cpu() if isinstance(x, torch.Tensor) else x for x in inputs)
    net = copy.deepcopy(model).cpu().eval()
    _parent(path)  # a directory that cannot be made is "cannot write", not an export error
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if format == "onnx":
                _export_onnx(net, inputs, str(tmp))
            else:
                torch.jit.save(torch.jit.trace(net, inputs), str(tmp))
    except NaspruneError:
        raise
    except Exception as exc:  # exporters raise many types for unsupported ops
        raise NaspruneError(f"{format} export failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return path


def _parent(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NaspruneError(f"cannot write '{path}': {exc.strerror or exc}") from exc
    return path.parent


def _export_onnx(net: nn.Module, inputs: tuple, dest: str) -> None:
    names = [f"input{i}" if i else "input" for i in range(len(inputs))]
    axes = {n: {0: "batch"} for n in names} | {"output": {0: "batch"}}
    torch.onnx.export(net, inputs, dest, dynamo=False, opset_version=17, input_names=names,
                      output_names=["output"], dynamic_axes=axes)
