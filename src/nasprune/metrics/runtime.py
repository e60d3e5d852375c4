"""Inference runtimes behind one small interface, and interleaved latency comparison.

A :class:`Runtime` names where a network will run — ``torch`` (eager, optionally
``torch.compile``) or ``onnxruntime`` (CPU execution provider; CUDA when asked for and
present) — with its thread count and batch size. :meth:`Runtime.session` turns a module
into a zero-argument callable that runs one forward pass on a fixed input, so every
timing loop (the latency table, the calibration, the delivery check) times the same thing
whatever the runtime. ONNX Runtime is an optional extra (``pip install
nasprune[onnxruntime]``), imported only when a runtime asks for it.

:func:`compare_latency` times several networks in interleaved rounds (a burst of load from
other processes then falls on all of them alike) and reports per network the median and
p90 over all runs, and the speed-up over the first network as the median of the per-round
ratios — a ratio of two times taken seconds apart, which load barely moves.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune.errors import NaspruneError

RUNTIMES = ("torch", "onnxruntime")
Session = Callable[[], Any]


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or one clear error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise NaspruneError("runtime 'onnxruntime' needs the onnxruntime package, which is "
                            "not installed: pip install 'nasprune[onnxruntime]' (or pip "
                            "install onnxruntime)") from None
    return onnxruntime


@dataclass(frozen=True)
class Runtime:
    """Where latency is measured: runtime name, device, CPU threads, batch size."""

    name: str = "torch"
    threads: int = 1
    batch_size: int = 1
    device: str = "cpu"
    compile: bool = False  # torch only: time torch.compile's graph instead of eager

    def __post_init__(self) -> None:
        if self.name not in RUNTIMES:
            raise NaspruneError(f"unknown runtime '{self.name}': choose from "
                                f"{', '.join(RUNTIMES)}")
        for key in ("threads", "batch_size"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NaspruneError(f"runtime {key} must be a positive integer, got {v!r}")
        if self.device not in ("cpu", "cuda"):
            raise NaspruneError(f"runtime device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.compile and self.name != "torch":
            raise NaspruneError("compile=True applies to the torch runtime only")
        if self.name == "onnxruntime":
            import_onnxruntime()  # missing package: fail now, before any measuring

    def key(self) -> dict[str, Any]:
        """What a latency table depends on (part of its cache fingerprint)."""
        version = torch.__version__
        if self.name == "onnxruntime":
            version = f"onnxruntime-{import_onnxruntime().__version__}"
        return {**asdict(self), "version": version, "provider": self.provider()}

    def provider(self) -> str:
        if self.name != "onnxruntime":
            return f"torch-{self.device}"
        ort = import_onnxruntime()
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        return "CUDAExecutionProvider" if self.device == "cuda" and cuda else \
            "CPUExecutionProvider"

    def describe(self) -> str:
        extra = ", compiled" if self.compile else ""
        return (f"{self.name} ({self.device}{extra}, {self.threads} thread"
                f"{'s' if self.threads > 1 else ''}, batch {self.batch_size})")

    def session(self, model: nn.Module, input_shape: Sequence[int]) -> Session:
        """A callable running one forward pass of ``model`` on a fixed random batch."""
        x = torch.randn(self.batch_size, *input_shape)
        net = copy.deepcopy(model).cpu().eval()
        if self.name == "onnxruntime":
            return _ort_session(net, x, self)
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise NaspruneError("runtime device 'cuda' asked for, but CUDA is not available")
        net, x = net.to(dev), x.to(dev)
        if self.compile:
            net = torch.compile(net)
        sync = dev.type == "cuda"

        def run() -> Any:
            with torch.inference_mode():
                out = net(x)
            if sync:
                torch.cuda.synchronize(dev)
            return out

        return run


def _ort_session(net: nn.Module, x: torch.Tensor, rt: Runtime) -> Session:
    """An ONNX Runtime session of ``net`` (exported in memory) and its runner."""
    ort = import_onnxruntime()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])
    except Exception as exc:  # exporters raise many types for unsupported ops
        raise NaspruneError(f"ONNX export for onnxruntime failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = rt.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=[rt.provider()])
    feed = {"input": x.numpy()}

    def run() -> Any:
        return sess.run(None, feed)

    return run


class _threads:
    """torch's intra-op threads pinned for a block (ONNX Runtime sets its own per session)."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self.old)


def time_ms(run: Session, repeats: int, warmup: int = 0) -> np.ndarray:
    """Wall-clock milliseconds of ``repeats`` calls of ``run`` after ``warmup`` calls."""
    for _ in range(warmup):
        run()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        run()
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def fastest_ms(model: nn.Module, input_shape: Sequence[int], runtime: Runtime,
               warmup: int = 3, repeats: int = 15) -> float:
    """The fastest of ``repeats`` runs of one network (the latency table's estimator)."""
    with _threads(runtime.threads):
        return float(time_ms(runtime.session(model, input_shape), repeats, warmup).min())


def compare_latency(models: Sequence[nn.Module], input_shape: Sequence[int],
                    runtime: Runtime, rounds: int = 7, repeats: int = 10,
                    warmup: int = 3, per_round: bool = False) -> list[dict[str, Any]]:
    """Interleaved latency of ``models`` on ``runtime``; speed-ups relative to ``models[0]``.

    Each of ``rounds`` rounds times every model ``repeats`` times in turn. Returns per
    model ``median_ms``, ``p90_ms``, ``min_ms`` over all its runs, ``speedup``: the
    median over rounds of (first model's round median / this model's round median), and
    ``min_speedup``: the ratio of the fastest runs (the least load-sensitive estimate, and
    the one the latency table predicts). ``per_round`` adds ``round_medians_ms``.
    """
    if rounds < 1 or repeats < 1:
        raise NaspruneError(f"need rounds ≥ 1 and repeats ≥ 1, got {rounds} and {repeats}")
    with _threads(runtime.threads):
        sessions = [runtime.session(m, input_shape) for m in models]
        for s in sessions:
            time_ms(s, 0, warmup)
        times = np.empty((rounds, len(models), repeats))
        for r in range(rounds):
            for j, s in enumerate(sessions):
                times[r, j] = time_ms(s, repeats)
    rounds_ms = np.median(times, axis=2)  # (rounds, models)
    flat = times.transpose(1, 0, 2).reshape(len(models), -1)
    out = [{"median_ms": float(np.median(flat[j])),
            "p90_ms": float(np.percentile(flat[j], 90)),
            "min_ms": float(flat[j].min()),
            "speedup": float(np.median(rounds_ms[:, 0] / rounds_ms[:, j])),
            "min_speedup": float(flat[0].min() / flat[j].min())}
           for j in range(len(models))]
    if per_round:
        for j, o in enumerate(out):
            o["round_medians_ms"] = rounds_ms[:, j].tolist()
    return out


def measured_speedup(model: nn.Module, baseline: nn.Module, example: torch.Tensor,
                     runtime: Runtime, rounds: int = 9, repeats: int = 10) -> dict[str, Any]:
    """``model`` against ``baseline`` (the unpruned network) on ``runtime``, interleaved:
    medians, p90, measured speed-up and, beside it, the MACs ratio it is compared with."""
    from nasprune.metrics.cost import count_macs

    shape = tuple(example.shape[1:])
    base, net = compare_latency([baseline, model], shape, runtime, rounds, repeats)
    return {"runtime": runtime.describe(), "batch": runtime.batch_size,
            "median_ms": net["median_ms"], "p90_ms": net["p90_ms"],
            "baseline_median_ms": base["median_ms"], "speedup": net["speedup"],
            "macs_ratio": count_macs(baseline, example) / count_macs(model, example)}
