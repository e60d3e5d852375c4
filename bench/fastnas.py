"""NVIDIA ModelOpt FastNAS as a peer in ``bench/peers.py``: called the way its users call it.

``mtp.prune(model, mode=[("fastnas", divisors)], constraints={"flops": ...}, dummy_input=x,
config={"data_loader": ..., "score_func": ...})``, with channel and feature divisors of 8
(its default of 32 cannot reach 50 % of the MACs on CIFAR ResNets, whose narrowest stage
has 16 channels). FastNAS gets the same calibration batches and the same score as
nasprune's search: its ``data_loader`` is the proxy's adaptive-BN batches (FastNAS
re-estimates BatchNorm on them itself before scoring a subnet) and its ``score_func`` is the
proxy's top-1 on the same fixed validation images.

ModelOpt needs torch ≥ 2.8 with torchvision, which do not import beside the torch 2.13.0
CPU build that nasprune's own environment pins, so it lives in a separate benchmark
environment (``bench/fastnas_env.sh``) and is never a dependency of nasprune. The method
registers itself only where ``modelopt`` imports.
"""

from __future__ import annotations

import copy
import io
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch
from torch import nn

DIVISOR = 8
MAC_TOLERANCE = 0.01  # as for Torch-Pruning: at most 1 % over the budget


def available() -> bool:
    """Whether NVIDIA ModelOpt imports here."""
    try:
        import modelopt.torch.prune  # noqa: F401
    except Exception:  # ImportError, or a torch/torchvision mismatch at import time
        return False
    return True


def fastnas_prune(model: nn.Module, example: torch.Tensor, fraction: float, proxy: Any,
                  checkpoint: str | None = None) -> nn.Module:
    """A copy of ``model`` pruned by FastNAS to ``fraction`` of its FLOPs, as ModelOpt counts
    them, scored by ``proxy`` (a :class:`nasprune.search.Proxy` on the same model)."""
    import modelopt.torch.prune as mtp

    net = copy.deepcopy(model).eval()
    mode = [("fastnas", {"nn.Conv2d": {"*": {"channel_divisor": DIVISOR}},
                         "nn.BatchNorm2d": {"*": {"feature_divisor": DIVISOR}}})]
    # FastNAS re-estimates BatchNorm through its forward loop before scoring a subnet: the
    # proxy's own adaptive-BN step on the proxy's fixed batches.
    config = {"forward_loop": proxy.recalibrate, "score_func": proxy.accuracy,
              "verbose": False}
    if checkpoint:
        config["checkpoint"] = checkpoint
    with redirect_stdout(io.StringIO()):  # its per-layer search log
        pruned, _ = mtp.prune(net, mode=mode, constraints={"flops": f"{100 * fraction:.2f}%"},
                              dummy_input=example.to(proxy.device), config=config)
    return pruned


def fastnas_to_budget(model: nn.Module, example: torch.Tensor, budget: float, proxy: Any,
                      work: Path | None = None, tries: int = 4) -> tuple[nn.Module, dict]:
    """FastNAS at ``budget`` of nasprune's MAC count: if ModelOpt's own FLOPs count lands
    the network over the budget, its target is scaled down by the overshoot and FastNAS
    runs again (at most ``tries`` times)."""
    import modelopt

    from nasprune.metrics import count_macs

    base = count_macs(model, example)
    target, net, macs, runs = budget, None, None, 0
    for attempt in range(tries):
        runs = attempt + 1
        ckpt = None
        if work is not None:
            work.mkdir(parents=True, exist_ok=True)
            ckpt = str(work / f"fastnas-{target:.5f}.pth")
        net = fastnas_prune(model, example, target, proxy, ckpt)
        macs = count_macs(net, example)
        if macs <= budget * base * (1 + MAC_TOLERANCE):
            break
        target *= budget * base / macs
    assert net is not None and macs is not None
    info = {"library": f"nvidia-modelopt {modelopt.__version__}", "mode": "fastnas",
            "channel_divisor": DIVISOR, "flops_target": target, "runs": runs,
            "macs": int(macs), "macs_fraction": macs / base, "budget": budget,
            "within_tolerance": macs <= budget * base * (1 + MAC_TOLERANCE)}
    return net, info


def register() -> bool:
    """Register the experiment method ``fastnas`` (idempotent); False where ModelOpt is
    absent."""
    if not available():
        return False
    from nasprune.methods import METHODS, Context, Pruned, register_method
    from nasprune.search import Proxy

    if "fastnas" in METHODS:
        return True

    @register_method("fastnas")
    def fastnas(ctx: Context) -> Pruned:
        """NVIDIA ModelOpt FastNAS at the MACs budget, scored by nasprune's search proxy."""
        s = ctx.cfg.search
        start = time.perf_counter()
        proxy = Proxy(ctx.model, ctx.data, bn_batches=s.bn_batches, val_size=s.val_size,
                      device=ctx.device, example_inputs=ctx.example, seed=ctx.seed,
                      channels_last=False)
        with tempfile.TemporaryDirectory() as tmp:
            net, info = fastnas_to_budget(ctx.model, ctx.example, ctx.cfg.budget, proxy,
                                          Path(tmp))
        if not info["within_tolerance"]:
            print(f"warning: FastNAS ends at {info['macs_fraction']:.2%} of the MACs",
                  file=sys.stderr)
        proxy.recalibrate(net)
        info["proxy_score"] = proxy.accuracy(net)
        info["note"] = (f"ModelOpt FastNAS, divisor {DIVISOR}, FLOPs target "
                        f"{info['flops_target']:.2%}")
        # mtp.prune returns the exported subnet: plain nn modules, saved like any other.
        net.nasprune_pruning = {"method": "fastnas", "criterion": None, "ratios": None,
                                "round_to": DIVISOR}
        return Pruned(net, search_seconds=time.perf_counter() - start, info=info)

    return True

