"""Layout: the pruning primitives never pull in training, metrics, search, CLI or methods.

``nasprune.pruning`` is the bottom layer the methods, the search and the CLI build on; if it
imported any of them (even inside a function) the layers would tangle again, and importing
the primitives would drag in data loaders, Optuna and the training loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import nasprune

FORBIDDEN = ("nasprune.train", "nasprune.metrics", "nasprune.search", "nasprune.cli",
             "nasprune.methods", "nasprune.experiment")
PRUNING = Path(nasprune.__file__).parent / "pruning"


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_pruning_primitives_load_nothing_above_them():
    """Import every module of nasprune.pruning and run the data-free primitives."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        import torch
        from torch import nn
        import nasprune.pruning as P
        for mod in pkgutil.walk_packages(P.__path__, "nasprune.pruning."):
            importlib.import_module(mod.name)
        from nasprune.pruning.layers import output_norm_scores
        from nasprune.pruning.spec import apply_spec, capture_spec

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(4, 4, 3, padding=1)

            def forward(self, x):
                return torch.relu(x + self.conv(x))

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              Block(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
        x = torch.randn(2, 1, 8, 8)
        pruned = P.prune(model, x, 0.5)
        apply_spec(model, capture_spec(pruned))
        blocks = P.residual_blocks(model, x)
        P.without_blocks(model, blocks, "output_norm",
                         output_norm_scores(model, blocks, x))
        P.mask_smallest(model, sparsity=0.5)
        loaded = [m for m in sys.modules if any(m == f or m.startswith(f + ".")
                                                for f in {FORBIDDEN!r})]
        print("LOADED", sorted(loaded))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "LOADED []" in run.stdout, run.stdout


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module named by an import statement anywhere in ``tree`` (functions included)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
            # ``from nasprune import metrics`` names the package too.
            names += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return names


def test_pruning_sources_import_nothing_above_them():
    files = sorted(PRUNING.rglob("*.py"))
    assert files
    bad = [f"{path.relative_to(PRUNING.parent)}:{line}: {name}"
           for path in files
           for line, name in _imported_names(ast.parse(path.read_text(), str(path)))
           if _forbidden(name)]
    assert not bad, "nasprune.pruning imports a higher layer:\n" + "\n".join(bad)
