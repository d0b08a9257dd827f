"""The campaign report (``semscale report``): figures from the store's scores, statistics and robustness
sweep, and ``report/index.html`` that holds them.

- :mod:`~semscale.report.figures`: one PNG per function, arrays and Datasets in, the store's palette;
- :mod:`~semscale.report.page`: the self-contained HTML page;
- :mod:`~semscale.report.build`: :func:`build_report`, gathering from the store, rebuilt only on change.
"""

from semscale.report.build import build_report

__all__ = ["build_report"]
