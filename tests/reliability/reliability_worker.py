"""One search worker process for the crash and multi-worker tests (run as a script).

``python tests/reliability/reliability_worker.py --checkpoint DIR --storage URL --study NAME --trials N``
joins (or creates) the study and works on it until it holds N complete trials, exactly as
``nasprune.search`` does for a user, with two test-only knobs: ``--sleep`` seconds added to
every evaluation (so a SIGKILL lands mid-trial) and short ``--heartbeat``/``--grace``
periods (so a dead worker's trial is failed within seconds, not the default 20 s).
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--trials", type=int, required=True)
    p.add_argument("--strategy", default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--heartbeat", type=int, default=1)
    p.add_argument("--grace", type=int, default=3)
    p.add_argument("--option", action="append", default=[], metavar="KEY=INT")
    p.add_argument("--barrier", default=None, metavar="DIR",
                   help="start searching only when --peers workers have checked in here")
    p.add_argument("--peers", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import nasprune
    from nasprune.search import Budget, Proxy, search
    from nasprune.search.study import open_storage

    model = nasprune.load(args.checkpoint).eval()
    data = nasprune.load_dataset("digits")

    class SlowEvaluator(Proxy):
        def score(self, prune_ratios):
            value = super().score(prune_ratios)
            time.sleep(args.sleep)
            return value

    evaluator = SlowEvaluator(model, data, bn_batches=2, val_size=128, device="cpu",
                              seed=args.seed)
    storage = open_storage(args.storage, heartbeat_interval=args.heartbeat,
                           grace_period=args.grace)
    options = {k: int(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.barrier:  # start-up (imports, data) varies by seconds on a busy machine
        import os
        from pathlib import Path

        Path(args.barrier, str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(os.listdir(args.barrier)) < args.peers and time.monotonic() < deadline:
            time.sleep(0.05)
    result = search(model, torch.zeros(1, 1, 8, 8), data, strategy=args.strategy,
                    target=Budget(macs=0.5), trials=args.trials, storage=storage,
                    study=args.study, seed=args.seed, evaluator=evaluator, progress=False,
                    **options)
    # "evaluated": candidates this process scored (the tests add them up over workers)
    print(f"done {len(result.trials)} complete, best {result.best.score:.4f}, "
          f"evaluated {evaluator.calls}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
