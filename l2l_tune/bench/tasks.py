"""Benchmark task instances: the meta-objective, its optimum, the gradient cost and a test metric.

A :class:`BenchTask` wraps one task instance (a quadratic, a least-squares batch, an
MNIST batch) with everything the benchmark needs to compare tuners on it:

* the objective every tuner minimises, ``(1/t)·log F(η)`` (``objective="log"``) or
  ``F(η)`` (``"last"``), with ``F`` the un-logged meta-loss after ``t`` inner steps;
* the search range ``[low, high]`` of the step size;
* the optimum ``η*`` and ``F* = F(η*)`` (exact for the quadratic; for the other tasks
  a dense log grid refined by bracketing on the exact meta-gradient);
* the measured cost of one meta-gradient evaluation in inner-run equivalents
  (:func:`measure_gradient_cost`);
* the final test metric of a chosen step size.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..meta import NonFiniteMetaGradientWarning
from ..tasks.base import MetaObjectiveTask
from ..tuner import StepSizeTuner
from .settings import BenchSettings

if TYPE_CHECKING:
    from .user_study import UserStudySettings

__all__ = [
    "BenchTask",
    "TASK_FACTORIES",
    "find_optimum",
    "gradient_cost",
    "log_loss",
    "make_task",
    "measure_gradient_cost",
    "mnist_data",
]


@dataclass
class BenchTask:
    """One task instance of the benchmark.

    Attributes:
        name: Task name (``"quadratic"``, ``"least-squares"``, ``"mnist"``).
        seed: Seed of the instance.
        task: The inner problem (any :class:`~l2l_tune.tasks.MetaObjectiveTask`).
        t: Inner steps.
        split: ``"train"`` or ``"valid"``.
        objective: ``"log"`` or ``"last"``.
        low: Smallest step size searched.
        high: Largest step size searched.
        eta_star: The optimal step size.
        log_f_star: ``log F(η*)`` (natural log of the un-logged meta-loss).
        metric_name: Name of the test metric (``"relative_error"``, ``"test_rmse"``,
            ``"test_accuracy"``).
        higher_is_better: Whether a larger test metric is better.
        test_metric: ``η ↦`` the test metric of step size ``η``.
        info: Facts about the instance and how ``η*`` was found.
        log_factor: ``log F = log_factor · objective`` for ``objective="log"``
            (checked on the task: ``t`` for the package's tasks).
        start: First step size of the meta-gradient tuners (``None``: the range's
            geometric mean).
    """

    name: str
    seed: int
    task: MetaObjectiveTask
    t: int
    split: str
    objective: str
    low: float
    high: float
    eta_star: float
    log_f_star: float
    metric_name: str
    higher_is_better: bool
    test_metric: Callable[[float], float] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    log_factor: float = 1.0
    start: float | None = None

    @property
    def log(self) -> bool:
        """Whether the tuners see the log objective."""
        return self.objective == "log"

    @property
    def eta0(self) -> float:
        """Where the meta-gradient tuners start: ``start`` or the range's geometric mean."""
        return self.start if self.start is not None else math.sqrt(self.low * self.high)

    def value(self, eta: float) -> float:
        """The objective at ``eta`` (one inner run)."""
        return float(self.task.meta_objective(eta, self.t, split=self.split, log=self.log))

    def value_and_gradient(self, eta: float) -> tuple[float, float]:
        """The objective and its exact derivative in ``eta``."""
        value, grad = self.task.value_and_gradient(eta, self.t, split=self.split, log=self.log)
        return float(value), float(grad)

    def log_loss(self, objective_value: float) -> float:
        """``log F`` from an objective value (:func:`log_loss`)."""
        return log_loss(objective_value, self.log, self.log_factor)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description (no task data)."""
        return {
            "seed": self.seed,
            "t": self.t,
            "split": self.split,
            "objective": self.objective,
            "low": self.low,
            "high": self.high,
            "eta0": self.eta0,
            "step_size_scale": self.task.step_size_scale(),
            "eta_star": self.eta_star,
            "log_f_star": self.log_f_star,
            "f_star": _exp(self.log_f_star),
            "metric_name": self.metric_name,
            "test_metric_at_eta_star": self.test_metric(self.eta_star),
            **self.info,
        }


def log_loss(objective_value: float, log: bool, log_factor: float) -> float:
    """``log F`` from a value of the objective: ``log_factor · value`` for the log objective
    (``log``), else ``log value`` (``±inf`` or NaN passed through)."""
    if log:
        return log_factor * objective_value
    if math.isnan(objective_value):
        return math.nan
    return math.log(objective_value) if objective_value > 0.0 else -math.inf


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf


def _log_meta_loss(task: MetaObjectiveTask, eta: float, t: int, split: str) -> float:
    return float(task.meta_objective(eta, t, split=split, log=True))


def _log_factor(task: MetaObjectiveTask, eta: float, t: int, split: str) -> float:
    """The factor ``k`` with ``log F = k · (log objective)``, read off the task (``t`` or 1)."""
    log_obj = _log_meta_loss(task, eta, t, split)
    plain = float(task.meta_objective(eta, t, split=split, log=False))
    if not (math.isfinite(log_obj) and math.isfinite(plain) and plain > 0.0):
        return float(t)
    target = math.log(plain)
    for factor in (float(t), 1.0):
        if abs(factor * log_obj - target) <= 1e-6 * max(1.0, abs(target)):
            return factor
    raise ValueError(
        f"the task's log objective ({log_obj!r}) is neither (1/t)·log nor log of its "
        f"meta-loss ({plain!r}) at eta={eta!r}"
    )


def find_optimum(
    task: MetaObjectiveTask,
    t: int,
    split: str,
    low: float,
    high: float,
    *,
    grid_points: int = 400,
    tol: float = 1e-12,
    max_evals: int = 200,
) -> tuple[float, float, dict[str, Any]]:
    """``(η*, (1/t)·log F(η*), info)`` on ``[low, high]``: a log grid refined by bracketing.

    The bracketing meta-optimizer (exact meta-gradients, relative tolerance ``tol``)
    starts from the best grid point inside the two grid cells around it, and the
    result is kept only if it is at least as good as that grid point; ``info``
    records both, so the grid verifies the refinement.

    Args:
        task: The task instance.
        t: Inner steps.
        split: ``"train"`` or ``"valid"``.
        low: Lower end of the grid.
        high: Upper end of the grid.
        grid_points: Points of the log grid, ``≥ 3``.
        tol: Relative bracket width of the refinement.
        max_evals: Most refinement evaluations.
    """
    grid = np.geomspace(low, high, grid_points)
    values = np.array([_log_meta_loss(task, float(e), t, split) for e in grid])
    values = np.where(np.isfinite(values), values, np.inf)
    i = int(np.argmin(values))
    lo = float(grid[max(i - 1, 0)])
    hi = float(grid[min(i + 1, grid_points - 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        tuner = StepSizeTuner(
            eta0=float(grid[i]),
            max_evals=max_evals,
            tol=tol,
            meta_optimizer_options={"bounds": (lo, hi)},
        ).fit(task, t, split=split, log=True)
    refined_eta = float(tuner.step_size_)
    refined = float(tuner.meta_objective_)
    evaluated = [(r.value, r.eta) for r in tuner.history_ if math.isfinite(r.value)]
    best_value, best_eta = min([(refined, refined_eta), *evaluated, (values[i], float(grid[i]))])
    info = {
        "optimum_method": (
            f"{grid_points}-point log grid on [low, high], refined by bracketing on the exact "
            f"meta-gradient (tol {tol:g}) inside the grid cells around the best grid point"
        ),
        "grid_best_eta": float(grid[i]),
        "grid_best_log_objective": float(values[i]),
        "refined_eta": refined_eta,
        "refined_log_objective": refined,
        "refinement_evals": tuner.n_evals_,
        "refinement_converged": bool(tuner.converged_),
        "refinement_gain_log_loss": float(t * (values[i] - best_value)),
    }
    return float(best_eta), float(best_value), info


def measure_gradient_cost(
    task: MetaObjectiveTask,
    t: int,
    split: str,
    etas: Sequence[float],
    *,
    repeats: int = 5,
) -> dict[str, Any]:
    """Cost of one meta-gradient evaluation in inner-run equivalents.

    For each step size, ``meta_objective`` and ``value_and_gradient`` are timed
    ``repeats`` times each, interleaved; the fastest of each is kept (the least
    disturbed by other work on the machine) and their ratio taken. The cost is the
    median ratio over the step sizes, never below 1.

    Returns:
        ``{"cost": …, "ratio_median": …, "ratios": [...], "value_s": [...],
        "gradient_s": [...], "etas": [...], "repeats": …}``.
    """
    ratios: list[float] = []
    value_s: list[float] = []
    grad_s: list[float] = []
    with warnings.catch_warnings():
        # A chaotic run's meta-gradient overflows (MNIST): its timing still counts.
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        for eta in etas:
            best_value = best_grad = math.inf
            for _ in range(repeats):
                start = time.perf_counter()
                task.meta_objective(float(eta), t, split=split, log=True)
                best_value = min(best_value, time.perf_counter() - start)
                start = time.perf_counter()
                task.value_and_gradient(float(eta), t, split=split, log=True)
                best_grad = min(best_grad, time.perf_counter() - start)
            value_s.append(best_value)
            grad_s.append(best_grad)
            ratios.append(best_grad / max(best_value, 1e-12))
    median = statistics.median(ratios)
    return {
        "cost": max(1.0, median),
        "ratio_median": median,
        "ratios": ratios,
        "value_s": value_s,
        "gradient_s": grad_s,
        "etas": [float(e) for e in etas],
        "repeats": repeats,
    }


def gradient_cost(
    task: MetaObjectiveTask,
    t: int,
    split: str,
    low: float,
    high: float,
    *,
    given: float | None,
    repeats: int,
    measured_on: str,
) -> dict[str, Any]:
    """:func:`measure_gradient_cost` at the 5 inner points of a 7-point log grid on
    ``[low, high]``, with a ``method`` naming what was timed (``measured_on``, e.g.
    ``"seed 0"``); or the ``given`` cost (``--grad-cost``) when it is not ``None``."""
    if given is not None:
        return {"cost": float(given), "method": "given by --grad-cost"}
    etas = [float(e) for e in np.geomspace(low, high, 7)[1:-1]]
    info = measure_gradient_cost(task, t, split, etas, repeats=repeats)
    info["method"] = (
        f"measured on {measured_on}: fastest of {repeats} timings of value_and_gradient ÷ "
        f"meta_objective at each of {len(etas)} step sizes, median over them, at least 1"
    )
    return info


# ---------------------------------------------------------------------------- factories
def _settings_fields(
    settings: BenchSettings, seed: int, task: MetaObjectiveTask, low: float, high: float
) -> dict[str, Any]:
    """The :class:`BenchTask` fields that come from the settings (resolved) and the instance."""
    return {
        "name": settings.task,
        "seed": seed,
        "task": task,
        "t": settings.t,
        "split": settings.split,
        "objective": settings.objective,
        "low": low,
        "high": high,
    }


def _quadratic(settings: BenchSettings, seed: int) -> BenchTask:
    from ..tasks import Quadratic

    assert settings.t is not None and settings.d is not None
    t = settings.t
    q = Quadratic.random(settings.d, seed, variant=settings.variant)  # type: ignore[arg-type]
    scale = q.step_size_scale()
    low, high = (x * scale for x in settings.eta_range)
    eta_star = q.optimal_step_size(t)
    log_f_star = t * _log_meta_loss(q, eta_star, t, "train")

    def relative_error(eta: float) -> float:
        return abs(eta - eta_star) / eta_star

    return BenchTask(
        **_settings_fields(settings, seed, q, low, high),
        eta_star=eta_star,
        log_f_star=log_f_star,
        metric_name="relative_error",
        higher_is_better=False,
        test_metric=relative_error,
        info={
            "instance": f"Quadratic.random({settings.d}, {seed}, variant={settings.variant!r})",
            "L": q.smoothness,
            "alpha": q.strong_convexity,
            "eta_star_times_L": eta_star * q.smoothness,
            "optimum_method": "Quadratic.optimal_step_size (Brent on the stable meta-gradient)",
        },
        log_factor=float(t),
    )


def _least_squares(settings: BenchSettings, seed: int) -> BenchTask:
    from ..tasks import LeastSquares

    assert settings.t is not None and settings.d is not None and settings.m is not None
    assert settings.n_train is not None and settings.split is not None
    t = settings.t
    n_valid = int(settings.n_valid or 0)
    dist = LeastSquares(settings.d, sigma=settings.sigma)
    batch = dist.sample(settings.m, settings.n_train, n_valid, seed=seed)
    scale = batch.step_size_scale()
    low, high = (x * scale for x in settings.eta_range)
    eta_star, log_obj_star, info = find_optimum(batch, t, settings.split, low, high)
    # The chosen step size is applied to all n_train + n_valid samples of new tasks (paper).
    n_test = settings.n_train + n_valid
    m_test = settings.m_test
    test_seed = 10_000 + seed

    test_batch: list[Any] = []

    def test_rmse(eta: float) -> float:
        # LeastSquares.evaluate(eta, t, n_test, m_test, seed) draws this batch and
        # evaluates it; the batch is drawn once here and reused for every step size.
        if not test_batch:
            test_batch.append(dist.sample(m_test, n_test, 0, seed=test_seed))
        return float(np.mean(test_batch[0].evaluate(eta, t).test_rmse))

    info.update(
        {
            "instance": (
                f"LeastSquares(d={settings.d}, sigma={settings.sigma:g}).sample(m={settings.m}, "
                f"n_train={settings.n_train}, n_valid={n_valid}, seed={seed})"
            ),
            "L": 1.0 / scale,
            "eta_star_times_L": eta_star / scale,
            "test": f"LeastSquares.evaluate(eta, t, n={n_test}, m={m_test}, seed={test_seed})",
        }
    )
    return BenchTask(
        **_settings_fields(settings, seed, batch, low, high),
        eta_star=eta_star,
        log_f_star=t * log_obj_star,
        metric_name="test_rmse",
        higher_is_better=False,
        test_metric=test_rmse,
        info=info,
        log_factor=float(t),
    )


def _mnist(settings: BenchSettings, seed: int) -> BenchTask:
    assert settings.t is not None and settings.m is not None and settings.n_train is not None
    assert settings.split is not None
    t = settings.t
    label_noise = float(settings.label_noise or 0.0)
    data = mnist_data(settings)
    batch = data.sample(
        settings.m,
        settings.n_train,
        n_valid=int(settings.n_valid or 0),
        label_noise=label_noise,
        seed=seed,
    )
    scale = float(batch.step_size_scale())
    low, high = (x * scale for x in settings.eta_range)
    factor = _log_factor(batch, math.sqrt(low * high), t, settings.split)
    # The meta-objective of a ReLU network is only piecewise smooth: a dense grid first.
    eta_star, log_obj_star, info = find_optimum(
        batch, t, settings.split, low, high, grid_points=60, tol=1e-6, max_evals=30
    )

    def test_accuracy(eta: float) -> float:
        return float(np.mean(batch.evaluate(eta, t).test_accuracy))

    info.update(
        {
            "instance": (
                f"MNIST(dataset={settings.dataset!r}).sample(m={settings.m}, "
                f"n_train={settings.n_train}, n_valid={settings.n_valid}, "
                f"label_noise={label_noise:g}, seed={seed})"
            ),
            "network": repr(data),
            "eta_star_times_L": eta_star / scale,
            "test": "mean test accuracy of the m networks trained t steps at eta (clean labels)",
        }
    )
    return BenchTask(
        **_settings_fields(settings, seed, batch, low, high),
        eta_star=eta_star,
        log_f_star=factor * log_obj_star,
        metric_name="test_accuracy",
        higher_is_better=True,
        test_metric=test_accuracy,
        info=info,
        log_factor=factor,
    )


@functools.cache
def _mnist_distribution(dataset: str, data_dir: str | None, download: bool) -> Any:
    from ..tasks import MNIST

    return MNIST(dataset=dataset, data_dir=data_dir, download=download)


def mnist_data(settings: BenchSettings | UserStudySettings) -> Any:
    """The MNIST task distribution of the settings' data set (loaded once per data set,
    directory and ``download``).

    Raises:
        ValueError: naming ``--task`` when PyTorch (or the MNIST task) is unavailable.
    """
    try:
        return _mnist_distribution(settings.dataset, settings.data_dir, settings.download)
    except ImportError as exc:
        raise ValueError(
            f"--task {settings.task} needs PyTorch (pip install 'l2l-tune[torch]'): {exc}"
        ) from exc


#: Task name -> ``(settings, seed) -> BenchTask``.
TASK_FACTORIES: dict[str, Callable[[BenchSettings, int], BenchTask]] = {
    "quadratic": _quadratic,
    "least-squares": _least_squares,
    "mnist": _mnist,
}


def make_task(settings: BenchSettings, seed: int) -> BenchTask:
    """The benchmark instance of ``settings.task`` for ``seed`` (settings already resolved)."""
    task = TASK_FACTORIES[settings.task](settings, seed)
    if settings.eta0 is not None:
        task.start = settings.eta0 * float(task.task.step_size_scale())
    return task
