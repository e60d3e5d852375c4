"""The top-level ``nasprune --help``: what a new user reads first."""

from __future__ import annotations

import pytest

from nasprune.cli import main


def test_top_level_help_lists_every_verb_in_workflow_order(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    verbs = ["demo", "train", "evaluate", "prune", "finetune", "search", "workers", "experiment",
             "report"]
    listed = [line.split()[0] for line in out.splitlines()
              if line.startswith("    ") and line.split()[0] in verbs]
    assert listed == verbs
    assert "Start with `nasprune demo`" in " ".join(out.split())
