"""``l2l-tune bench``: every tuner on the same meta-objective with the same budget of inner runs.

* :mod:`~l2l_tune.bench.settings`: the options and the tuner names;
* :mod:`~l2l_tune.bench.tasks`: task instances with their optimum, gradient cost and test metric;
* :mod:`~l2l_tune.bench.tuners` (and :mod:`~l2l_tune.bench.raytune`): the tuners;
* :mod:`~l2l_tune.bench.report`: thresholds, medians and spreads, the headline, plots;
* :func:`run_bench`: all of it, writing ``report.md``, ``results.json`` and PNG plots.

Importing this package imports neither Optuna, Ray, PyTorch nor Matplotlib.
"""

from __future__ import annotations

from .run import run_bench
from .settings import TUNER_NAMES, BenchSettings

__all__ = ["TUNER_NAMES", "BenchSettings", "run_bench"]
