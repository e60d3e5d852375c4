"""Plots and the HTML report of a real (small) experiment run."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

import nasprune
from nasprune.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert('pwned')</script>"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = {
        "name": "report-test",
        "note": f"note with {HOSTILE} & <b>tags</b>",
        "baseline": {"epochs": 1},
        "finetune": {"epochs": 1, "bn_batches": 2},
        "search": {"trials": 4, "val_size": 150, "bn_batches": 2, "objective": "multi"},
        "sensitivity": {"levels": [0.5, 0.9], "bn_batches": 2, "val_size": 150},
        "latency": {"batch": 4, "warmup": 0, "repeats": 1, "rounds": 1},
        "threads": 1,
        "methods": ["unpruned", "sensitivity", "nas:random",
                    {"method": "uniform", "name": HOSTILE}],
    }
    result = nasprune.experiment(cfg, out, progress=False)
    return out, result


def test_plots_are_valid_pngs(run):
    from PIL import Image

    out, result = run
    names = {p.stem for p in (out / "plots").glob("*.png")}
    assert names == {"accuracy_vs_macs", "accuracy_vs_latency", "kept_channels",
                     "search_progress", "sensitivity"}
    for path in (out / "plots").glob("*.png"):
        raw = path.read_bytes()
        assert raw.startswith(PNG) and len(raw) > 1000
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] >= 600 and im.size[1] >= 400
            pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
        # Real content, not a blank canvas: many colours (lines, markers, anti-aliased
        # text), and a fair share of pixels that are not the background colour.
        colours, counts = np.unique(pixels, axis=0, return_counts=True)
        drawn = 1 - counts.max() / len(pixels)
        assert len(colours) >= 50 and 0.02 <= drawn <= 0.9, (path.name, len(colours), drawn)
    assert set(result.files) >= {"json", "csv", "md", "report", "accuracy_vs_macs"}


def test_report_is_self_contained_and_escaped(run):
    out, result = run
    html = (out / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 5  # every plot, accuracy vs measured latency included
    import base64

    assert all(base64.b64decode(b).startswith(PNG) for b in images)
    # Offline: nothing fetched from elsewhere, no scripts at all.
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert "&lt;b&gt;tags&lt;/b&gt;" in html
    # Tables, config and environment are in it.
    row = result.row(HOSTILE)
    assert f"<td>{100 * row['top1']:.2f}</td>" in html
    import torch

    assert f"<td>{torch.__version__}</td>" in html
    assert "budget: 0.5" in html and "Resolved config" in html
    assert html.count("<details>") == 4


def test_pareto_front_of_multi_objective_search_is_recorded(run):
    out, result = run
    import json

    search = json.loads((out / "methods" / "nas-random" / "search.json").read_text())
    assert search["objective"] == "multi" and search["pareto"]
    for c in search["pareto"]:
        assert c["macs"] <= 0.5 * result.baseline["metrics"]["macs"] * 1.0001


def test_markdown_escapes_table_breakers(run):
    from nasprune.report.tables import to_csv, to_markdown

    _, result = run
    rows = [dict(r) for r in result.rows]
    rows[0]["method"] = "a|b\nc"
    md = to_markdown(rows)
    assert "| a\\|b c |" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == len(rows) + 1  # header + one line per row, nothing split
    assert "a|b\nc" in to_csv(rows)  # csv quotes it instead


def test_report_cli_redraws_plots_and_html(run, capsys, tmp_path):
    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "plots")
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "report.html").is_file()
    assert len(list((copy / "plots").glob("*.png"))) == 5
    assert "report.html" in capsys.readouterr().out

    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not an experiment run directory" in capsys.readouterr().err
