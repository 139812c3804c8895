"""The tuners of the benchmark, each run on a :class:`~l2l_tune.bench.tasks.BenchTask`.

Every tuner gets the same budget ``N`` of inner-run equivalents: a value-only
evaluation costs 1, an exact meta-gradient evaluation costs the measured
``gradient_cost``, so a meta-gradient tuner makes ``⌊N / gradient_cost⌋``
evaluations. All search the step size in ``[task.low, task.high]`` (log scale)
on the same objective.

* ``l2l``: :class:`~l2l_tune.StepSizeTuner` with the default ``"auto"``
  meta-optimizer (the bracket on the closed forms, the model-based search on
  MNIST) and exact meta-gradients; ``l2l-paper``: the paper's projected
  meta-GD (``μ_k = 0.01/√k``); both start at the range's geometric mean
  (or ``--eta0``).
* ``l2l-blackbox``: the bracketing meta-optimizer on finite-difference pairs of
  values only (:mod:`l2l_tune.meta.driver`, as the Optuna and Ray adapters do).
* ``grid``, ``random``: :class:`~l2l_tune.GridSearch` (``N`` log-spaced points,
  ascending) and :class:`~l2l_tune.RandomSearch` (``N`` log-uniform draws).
* ``optuna-*``: an Optuna study of ``N`` trials with ``GridSampler`` (the same
  ``N`` points, in the sampler's shuffled order), ``RandomSampler``,
  ``TPESampler``, ``CmaEsSampler`` or ``GPSampler(deterministic_objective=True)``.
  Values are clamped to ``±1e300``; the GP always sees a log objective (it overflows
  on raw values up to 1e300), clamped to ``±1e4``.
* ``optuna-l2l``, ``optuna-l2l-blackbox``: this library's
  :class:`~l2l_tune.integrations.optuna.MetaGradientSampler` in an Optuna study, as a
  user drops it in (defaults, ``deterministic`` set for the closed-form tasks): the
  objective reports the exact meta-gradient (``report_meta_gradient``; each trial costs
  ``gradient_cost``), or returns the value only (finite-difference pairs of trials).
* ``ray-*``: see :mod:`l2l_tune.bench.raytune`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._optional import install_hint, module_available
from ..baselines import GridSearch, RandomSearch
from ..meta import make_meta_optimizer
from ..meta.base import NonFiniteMetaGradientWarning
from ..meta.driver import Evaluation, propose, records_from_evaluations
from ..tasks.base import is_exact_task
from ..tuner import StepSizeTuner
from .recording import GradientView, Recorder, TunerRun, ValueView, clamp
from .settings import GRADIENT_TUNERS, OPTUNA_TUNERS, RAY_TUNERS
from .tasks import BenchTask

__all__ = [
    "FD_STEP",
    "GP_CLAMP",
    "TUNER_PACKAGES",
    "USER_TUNER_PACKAGES",
    "baseline_search",
    "evaluations_allowed",
    "missing_dependency",
    "run_tuner",
]

#: Relative spacing of the black-box tuner's finite-difference pairs (the adapters' default).
FD_STEP = 0.02
#: Clamp of the (log) values the Optuna GP sees.
GP_CLAMP = 1e4
#: Tolerance of the l2l meta-optimizers (the library's default).
TOL = 1e-10


def evaluations_allowed(tuner: str, budget: int, gradient_cost: float) -> int:
    """Evaluations a tuner may make within ``budget`` inner-run equivalents."""
    if tuner in GRADIENT_TUNERS:
        return int(math.floor(budget / gradient_cost + 1e-9))
    return int(budget)


#: The packages each tuner imports beyond the core, with the extra that installs them.
#: Optuna's CMA-ES sampler imports ``cmaes`` and its GP sampler ``torch``; ``ray-tpe`` is
#: Ray's ``OptunaSearch``.
TUNER_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "optuna-grid": (("optuna", "optuna"),),
    "optuna-random": (("optuna", "optuna"),),
    "optuna-tpe": (("optuna", "optuna"),),
    "optuna-cmaes": (("optuna", "optuna"), ("cmaes", "optuna")),
    "optuna-gp": (("optuna", "optuna"), ("torch", "torch")),
    "optuna-l2l": (("optuna", "optuna"),),
    "optuna-l2l-blackbox": (("optuna", "optuna"),),
    "ray-random": (("ray", "ray"),),
    "ray-tpe": (("ray", "ray"), ("optuna", "optuna")),
    "ray-l2l": (("ray", "ray"),),
    "ray-l2l-blackbox": (("ray", "ray"),),
}


#: Packages of the user-study tuners (:mod:`l2l_tune.bench.user_study`) not listed above
#: (its ``optuna-*`` tuners share the entries of :data:`TUNER_PACKAGES`).
USER_TUNER_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "prodigy": (("prodigyopt", "bench"),),
    "schedule-free": (("schedulefree", "bench"),),
}


def missing_dependency(tuner: str) -> str | None:
    """Why ``tuner`` cannot run here (its missing packages and the extra to install), or
    ``None`` when every package it imports is importable."""
    packages = TUNER_PACKAGES.get(tuner) or USER_TUNER_PACKAGES.get(tuner, ())
    missing = [
        f"{package} ({install_hint(extra)})"
        for package, extra in packages
        if not module_available(package)
    ]
    if not missing:
        return None
    return f"{tuner} skipped: needs " + " and ".join(missing)


@contextlib.contextmanager
def _caught(counts: dict[str, int]) -> Iterator[None]:
    """Record the warnings raised inside (message → count) instead of showing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        key = f"{w.category.__name__}: {str(w.message)[:200]}"
        counts[key] = counts.get(key, 0) + 1


# ---------------------------------------------------------------------------- in-process
def _run_step_size_tuner(
    meta_optimizer: str, task: BenchTask, n: int, rec: Recorder
) -> dict[str, Any]:
    tuner = StepSizeTuner(
        meta_optimizer=meta_optimizer,
        eta0=task.eta0,
        max_evals=n,
        tol=TOL,
        meta_optimizer_options={"bounds": (task.low, task.high)},
    )
    tuner.fit(GradientView(rec), task.t, split=task.split, log=task.log)
    return {"estimate": tuner.step_size_, "converged": bool(tuner.converged_)}


def _run_blackbox(task: BenchTask, n: int, rec: Recorder) -> dict[str, Any]:
    """The bracketing meta-optimizer on finite-difference pairs (values only)."""
    evaluations: list[Evaluation] = []
    bounds = (task.low, task.high)
    converged = False
    estimate = task.eta0
    for key in range(n):
        optimizer = make_meta_optimizer("bracket", eta0=task.eta0, bounds=bounds, tol=TOL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            # The tuner already sees the chosen objective: no further log transform.
            for record in records_from_evaluations(evaluations, log_objective=False):
                optimizer.tell(record.eta, record.value, record.grad)
        estimate = optimizer.estimate()
        if optimizer.converged:
            converged = True
            break
        proposal = propose(optimizer, evaluations, fd_step=FD_STEP, bounds=bounds)
        value = rec.value(proposal.eta)
        evaluations.append(
            Evaluation(
                key=key,
                eta=proposal.eta,
                value=value,
                role=proposal.role,
                pair=proposal.pair,
                fd_step=proposal.fd_step,
            )
        )
    return {"estimate": float(estimate), "converged": converged}


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs only errors inside (its per-trial INFO lines would bury the progress bar)."""
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _sampler(tuner: str, task: BenchTask, n: int, seed: int) -> Any:
    """A fresh Optuna sampler of ``tuner`` for ``task`` (``n`` trials)."""
    from optuna import samplers

    if tuner in ("optuna-l2l", "optuna-l2l-blackbox"):
        from ..integrations.optuna import MetaGradientSampler

        return MetaGradientSampler(
            param="lr", eta0=task.eta0, deterministic=is_exact_task(task.task), seed=seed
        )
    if tuner == "optuna-grid":
        grid = np.clip(np.geomspace(task.low, task.high, n), task.low, task.high)
        return samplers.GridSampler({"lr": [float(x) for x in grid]}, seed=seed)
    if tuner == "optuna-gp":
        return samplers.GPSampler(seed=seed, deterministic_objective=True)
    factories = {
        "optuna-random": samplers.RandomSampler,
        "optuna-tpe": samplers.TPESampler,
        "optuna-cmaes": samplers.CmaEsSampler,
    }
    return factories[tuner](seed=seed)


def _run_optuna(tuner: str, task: BenchTask, n: int, seed: int, rec: Recorder) -> dict[str, Any]:
    import optuna

    from ..integrations.optuna import MetaGradientSampler, report_meta_gradient

    sampler = _sampler(tuner, task, n, seed)
    gp, gradient = tuner == "optuna-gp", tuner == "optuna-l2l"

    def objective(trial: Any) -> float:
        eta = trial.suggest_float("lr", task.low, task.high, log=True)
        if gradient:
            value, grad = rec.value_and_gradient(eta)
            report_meta_gradient(trial, grad)
        else:
            value = rec.value(eta)
        if gp:
            logged = value if task.log else task.log_loss(value)
            return max(-GP_CLAMP, min(GP_CLAMP, logged)) if not math.isnan(logged) else GP_CLAMP
        return clamp(value)

    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.optimize(objective, n_trials=n)
    failed = sum(tr.state != optuna.trial.TrialState.COMPLETE for tr in study.trials)
    out: dict[str, Any] = {"trials": len(study.trials), "failed_trials": failed}
    if isinstance(sampler, MetaGradientSampler):
        optimizer = sampler.meta_optimizer_for(study)
        out.update(estimate=float(optimizer.estimate()), converged=bool(optimizer.converged))
    return out


def baseline_search(
    tuner: str, n: int, low: float, high: float, seed: int
) -> GridSearch | RandomSearch:
    """The ``grid`` (``n`` log-spaced points, ascending) or ``random`` (``n`` log-uniform
    draws with ``seed``) search of ``[low, high]``."""
    if tuner == "grid":
        return GridSearch(low=low, high=high, n_points=n)
    return RandomSearch(n_evals=n, low=low, high=high, seed=seed)


def _run_in_process(
    tuner: str, task: BenchTask, n: int, seed: int, rec: Recorder
) -> dict[str, Any]:
    if tuner in ("l2l", "l2l-paper"):
        return _run_step_size_tuner("auto" if tuner == "l2l" else "paper", task, n, rec)
    if tuner == "l2l-blackbox":
        return _run_blackbox(task, n, rec)
    if tuner in ("grid", "random"):
        search = baseline_search(tuner, n, task.low, task.high, seed)
        search.fit(ValueView(rec), task.t, split=task.split, log=task.log)
        return {}
    return _run_optuna(tuner, task, n, seed, rec)


def run_tuner(
    tuner: str,
    task: BenchTask,
    budget: int,
    gradient_cost: float,
    *,
    seed: int,
    ray_session: Any = None,
) -> TunerRun:
    """Run ``tuner`` on ``task`` within ``budget`` inner-run equivalents.

    Args:
        tuner: A name of :data:`~l2l_tune.bench.settings.TUNER_NAMES`.
        task: The benchmark instance.
        budget: Inner-run equivalents.
        gradient_cost: Inner-run equivalents of one meta-gradient evaluation.
        seed: Seed of the tuner (the instance's seed).
        ray_session: A started :class:`~l2l_tune.bench.raytune.RaySession` (``ray-*`` only).

    Returns:
        The recorded :class:`~l2l_tune.bench.recording.TunerRun`.
    """
    n = evaluations_allowed(tuner, budget, gradient_cost)
    counts: dict[str, int] = {}
    quiet = _quiet_optuna() if tuner in OPTUNA_TUNERS else contextlib.nullcontext()
    if tuner in RAY_TUNERS:
        from .raytune import run_ray_tuner

        if ray_session is None:
            raise ValueError(f"{tuner} needs a started RaySession (ray_session=...)")
        with _caught(counts), quiet:
            run = run_ray_tuner(tuner, task, n, gradient_cost, seed=seed, session=ray_session)
    else:
        rec = Recorder(task, gradient_cost)
        with _caught(counts), quiet:
            extra = _run_in_process(tuner, task, n, seed, rec)
        run = TunerRun(tuner, seed, rec.points, time.perf_counter() - rec.start, extra)
    run.warnings = counts
    run.extra["max_evals"] = n
    return run
