#!/usr/bin/env bash
# The benchmark environment for NVIDIA ModelOpt FastNAS (bench/fastnas.py), never a dependency
# of nasprune: ModelOpt 0.47 needs torch >= 2.8 with torchvision, which do not import beside the
# torch 2.13.0 CPU build that the Makefile pins, so it gets its own venv (about 6 GB: pip takes
# torch 2.14.1 + torchvision 0.29.1, a CUDA build that runs on the CPU). Idempotent.
# Usage: bash bench/fastnas_env.sh [VENV]   (default .venv-fastnas), then e.g.
#   nice .venv-fastnas/bin/python bench/proxy_vs_tp.py --checkpoint ../shared/baselines/resnet20-cifar10 ...
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-fastnas}"
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# ModelOpt's FastNAS imports requests, huggingface_hub and torchprofile 0.0.4 without
# declaring them all.
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 nvidia-modelopt==0.47.0 \
    requests huggingface_hub torchprofile==0.0.4
"$VENV/bin/python" -m pip install -q -e '.[dev]'
"$VENV/bin/python" -c "import modelopt.torch.prune, torchvision; print('FastNAS environment ready:', '$VENV')"
