"""The Ray Tune tuners of the benchmark: ``ray-random``, ``ray-tpe``, ``ray-l2l`` and
``ray-l2l-blackbox``.

One :class:`RaySession` serves a whole benchmark run: it points Ray at a private
temporary directory (``RAY_TMPDIR``, unless already set), turns off token
authentication, usage stats and Tune's console tables, starts one local Ray
instance (``num_cpus``, no dashboard) unless one is running, and keeps every
experiment's files in a temporary ``storage_path`` that it removes at the end.

Each tuner is one ``tune.Tuner`` run of ``n`` trials with ``reuse_actors=True`` and
``max_concurrent_trials`` workers (default 1, so that trials finish in the order
they were suggested). A trial evaluates the task's objective (the task is
shipped once through ``tune.with_parameters``), sleeps ``trial_seconds`` (so that
concurrent trials overlap and may finish out of order, as long trials do) and reports
``objective``, its meta-gradient ``objective_grad`` (``ray-l2l`` only), ``log_loss``,
its ``start_time`` and ``end_time``; the run's evaluations are ordered by the end
time, and the run records the peak number of trials running at once and whether they
finished in the order they started.

* ``ray-random``: ``BasicVariantGenerator(random_state=seed)``, log-uniform draws;
* ``ray-tpe``: ``OptunaSearch(sampler=TPESampler(seed=seed))``;
* ``ray-l2l``: :class:`~l2l_tune.integrations.ray.MetaGradientSearch` with the exact
  meta-gradient (``log_objective=False``: the objective is already the chosen one);
  ``ray-l2l-blackbox``: the same searcher on values only (finite-difference pairs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from unittest import mock

from .recording import EvalPoint, TunerRun, clamp
from .tasks import BenchTask, log_loss

__all__ = ["RaySession", "run_ray_tuner"]

_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}


class RaySession:
    """A local Ray instance and a temporary experiment storage for one benchmark run.

    Args:
        num_cpus: CPUs of the local Ray instance (ignored when Ray is already running).
        workers: Concurrent trials of each Tuner run.
        torch_threads: PyTorch threads in the trials of the MNIST task.
        trial_seconds: Seconds every trial sleeps before it reports.

    Attributes:
        storage: Absolute path of the temporary ``storage_path`` (while entered).
    """

    def __init__(
        self,
        num_cpus: int = 2,
        workers: int = 1,
        torch_threads: int = 1,
        trial_seconds: float = 0.0,
    ) -> None:
        self.num_cpus = num_cpus
        self.workers = workers
        self.torch_threads = torch_threads
        self.trial_seconds = trial_seconds
        self.storage = ""
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RaySession:
        stack = self._stack
        # The environment is restored on exit (RAY_TMPDIR included, when set here).
        stack.enter_context(mock.patch.dict(os.environ, _ENV))
        if not os.environ.get("RAY_TMPDIR"):
            # Short path: Ray's unix sockets must stay under 107 bytes.
            base = "/tmp" if os.path.isdir("/tmp") else None
            temporary = tempfile.TemporaryDirectory(
                prefix="l2lray", dir=base, ignore_cleanup_errors=True
            )
            os.environ["RAY_TMPDIR"] = stack.enter_context(temporary)
        import ray

        if not ray.is_initialized():
            ray.init(
                num_cpus=self.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
            stack.callback(ray.shutdown)
        self.storage = tempfile.mkdtemp(prefix="l2lbench", dir=os.environ["RAY_TMPDIR"])
        stack.callback(shutil.rmtree, self.storage, ignore_errors=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()


@dataclass(frozen=True)
class _TrialObjective:
    """What a Ray trial needs: the task instance and how to evaluate it (picklable)."""

    task: Any
    t: int
    split: str
    log: bool
    log_factor: float
    gradient: bool
    torch_threads: int | None = None
    sleep_s: float = 0.0


def _trainable(config: dict[str, Any], objective: _TrialObjective | None = None) -> None:
    """Ray function trainable: one evaluation of the objective at ``config["lr"]``."""
    from ray import tune

    assert objective is not None
    if objective.torch_threads is not None:
        import torch

        torch.set_num_threads(objective.torch_threads)
    eta = float(config["lr"])
    start_time = time.time()
    start = time.perf_counter()
    metrics: dict[str, Any] = {}
    if objective.gradient:
        value, grad = objective.task.value_and_gradient(
            eta, objective.t, split=objective.split, log=objective.log
        )
        metrics["objective"] = float(value)
        metrics["objective_grad"] = float(grad)
    else:
        value = objective.task.meta_objective(
            eta, objective.t, split=objective.split, log=objective.log
        )
        metrics["objective"] = clamp(float(value))
    metrics["raw_objective"] = float(value)
    metrics["log_loss"] = log_loss(float(value), objective.log, objective.log_factor)
    metrics["eval_s"] = time.perf_counter() - start
    if objective.sleep_s:
        time.sleep(objective.sleep_s)
    metrics["start_time"] = start_time
    metrics["end_time"] = time.time()
    tune.report(metrics)


def _search(tuner: str, seed: int, workers: int, eta0: float) -> Any:
    if tuner == "ray-random":
        from ray.tune.search import BasicVariantGenerator

        # Ray ignores max_concurrent_trials for a BasicVariantGenerator (not a Searcher).
        return BasicVariantGenerator(random_state=seed, max_concurrent=workers)
    if tuner == "ray-tpe":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=TPESampler(seed=seed), metric="objective", mode="min")
    if tuner in ("ray-l2l", "ray-l2l-blackbox"):
        # The black box's trials report no "objective_grad": finite-difference pairs.
        from ..integrations.ray import MetaGradientSearch

        return MetaGradientSearch(
            param="lr",
            metric="objective",
            mode="min",
            grad_metric="objective_grad",
            meta_optimizer="bracket",
            eta0=eta0,
            log_objective=False,
            seed=seed,
        )
    raise ValueError(
        "tuner must be one of 'ray-random', 'ray-tpe', 'ray-l2l', 'ray-l2l-blackbox'; "
        f"got {tuner!r}"
    )


def _concurrency(intervals: list[tuple[float, float]]) -> dict[str, Any]:
    """The peak number of the ``(start, end)`` intervals open at once, and whether they
    ended in the order they started."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, change in events:  # at a tie an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    by_start = [end for _, end in sorted(intervals)]
    return {
        "peak_concurrency": peak,
        "completed_in_start_order": by_start == sorted(by_start),
    }


def run_ray_tuner(
    tuner: str,
    task: BenchTask,
    n: int,
    gradient_cost: float,
    *,
    seed: int,
    session: RaySession,
) -> TunerRun:
    """One Ray Tune run of ``n`` trials of ``tuner`` on ``task``.

    Args:
        tuner: ``"ray-random"``, ``"ray-tpe"``, ``"ray-l2l"`` or ``"ray-l2l-blackbox"``.
        task: The benchmark instance.
        n: Trials.
        gradient_cost: Inner-run equivalents of a meta-gradient trial (``ray-l2l``).
        seed: Seed of the searcher.
        session: The entered :class:`RaySession` (its ``workers``: concurrent trials).
    """
    from ray import tune

    workers = session.workers
    gradient = tuner == "ray-l2l"
    objective = _TrialObjective(
        task=task.task,
        t=task.t,
        split=task.split,
        log=task.log,
        log_factor=task.log_factor,
        gradient=gradient,
        torch_threads=session.torch_threads if task.name == "mnist" else None,
        sleep_s=session.trial_seconds,
    )
    search = _search(tuner, seed, workers, task.eta0)
    tune_config: dict[str, Any] = {
        "search_alg": search,
        "metric": "objective",
        "mode": "min",
        "num_samples": n,
        "reuse_actors": True,
    }
    if tuner != "ray-random":
        tune_config["max_concurrent_trials"] = workers
    runner = tune.Tuner(
        tune.with_parameters(_trainable, objective=objective),
        param_space={"lr": tune.loguniform(task.low, task.high)},
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(
            name=f"{tuner}-seed{seed}-{time.time_ns()}",
            storage_path=session.storage,
            verbose=0,
        ),
    )
    start_wall = time.time()
    start = time.perf_counter()
    grid = runner.fit()
    wall = time.perf_counter() - start
    rows: list[tuple[float, float, float, float]] = []
    starts: list[tuple[float, float]] = []
    errors = 0
    for i in range(len(grid)):
        result = grid[i]
        metrics = result.metrics or {}
        if result.error is not None or "end_time" not in metrics:
            errors += 1
            continue
        starts.append((float(metrics["start_time"]), float(metrics["end_time"])))
        rows.append(
            (
                float(metrics["end_time"]),
                float((result.config or {})["lr"]),
                float(metrics["raw_objective"]),
                float(metrics["log_loss"]),
            )
        )
    rows.sort()
    cost = gradient_cost if gradient else 1.0
    points = [
        EvalPoint(eta, value, log_loss, cost, end - start_wall, gradient)
        for end, eta, value, log_loss in rows
    ]
    extra: dict[str, Any] = {
        "trials": len(grid),
        "errored_trials": errors,
        "workers": workers,
        "trial_seconds": session.trial_seconds,
        **_concurrency(starts),
    }
    if tuner in ("ray-l2l", "ray-l2l-blackbox"):
        optimizer = search.meta_optimizer_state()
        extra["estimate"] = float(optimizer.estimate())
        extra["converged"] = bool(optimizer.converged)
    return TunerRun(tuner, seed, points, wall, extra)
