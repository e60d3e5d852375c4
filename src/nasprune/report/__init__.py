"""Reports: render a finished experiment's results as tables, plots and one HTML page.

``write_report`` redraws the plots and ``report.html`` of a finished run; ``make_plots``
draws the PNGs; :mod:`nasprune.report.tables` formats Markdown/CSV/JSON rows. Everything
here reads the run's files (:mod:`nasprune.report.results`) and never imports
:mod:`nasprune.experiment`, which writes them.
"""

from __future__ import annotations

from nasprune.report.html import write_report
from nasprune.report.plots import make_plots

__all__ = ["make_plots", "write_report"]
