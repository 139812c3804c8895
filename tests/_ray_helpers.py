"""Helpers shared by the Ray Tune tests (importing this module starts no Ray process).

* :func:`ray_environment` points Ray at a private temporary directory and turns off
  usage stats and token authentication (GUIDE §5), restoring the environment after.
* :class:`OrderRecordingSearch` is :class:`MetaGradientSearch` plus a record of the
  order in which Ray suggested and completed trials; the record is part of the
  searcher's saved state, so it survives ``Tuner.restore``. It changes nothing else.
* :func:`check_convergence` asserts the 1e-6 convergence claim, except in runs whose
  trials completed out of suggestion order, where the known order-dependence bug
  (``test_ray_searcher.py::test_concurrent_convergence_whatever_the_completion_order``)
  applies: those runs are reported as xfail with the distance reached.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from l2l_tune.integrations.ray import MetaGradientSearch
from ray.tune import ResultGrid

from l2l_tune import Quadratic

#: Inner GD steps of the quadratic task (the paper's Fig 1).
T = 80

#: Environment variables the Ray tests set (and restore afterwards).
RAY_ENV_VARS = ("RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")

ORDER_BUG = (
    "known limitation: with 2 concurrent trials completing out of order, 30 trials can end "
    "a few 1e-6 from eta* (40 always reach it; measured in "
    "tests/test_ray_searcher.py::test_concurrent_convergence_whatever_the_completion_order)"
)


def fig1_quadratic() -> Quadratic:
    """The authors' Fig-1 quadratic (d = 20, seed 0): ``η* ≈ 0.03087`` at ``t = 80``."""
    return Quadratic.random(20, 0, variant="authors")


@contextlib.contextmanager
def ray_environment(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """Set Ray's environment to a fresh temporary directory; yield it; restore the environment.

    Ray's unix-socket paths (``<RAY_TMPDIR>/ray/session_<date>_<pid>/sockets/plasma_store``)
    must stay under 107 bytes and the part after ``RAY_TMPDIR`` takes about 70, so a pytest
    base directory longer than 36 characters is replaced by a short ``mkdtemp`` under the
    system temp dir (removed afterwards).
    """
    base = tmp_path_factory.mktemp(name)
    own: Path | None = None
    if len(str(base)) > 36:
        own = Path(tempfile.mkdtemp(prefix="l2lray"))
        base = own
    saved = {key: os.environ.get(key) for key in RAY_ENV_VARS}
    os.environ["RAY_TMPDIR"] = str(base)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        yield base
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)


class OrderRecordingSearch(MetaGradientSearch):
    """:class:`MetaGradientSearch` that records the order of ``suggest`` and ``on_trial_complete``.

    Observation only: every call is passed on unchanged. The record is saved with the
    searcher's state (``get_state``/``save``) and restored with it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.suggested: list[str] = []
        self.completed: list[str] = []

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            self.suggested.append(trial_id)
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id not in self.completed:
            self.completed.append(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict[str, Any]:
        state = dict(super().get_state())
        state["order"] = (list(self.suggested), list(self.completed))
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        order = state.pop("order", None)
        super().set_state(state)
        if order is not None:
            self.suggested, self.completed = list(order[0]), list(order[1])

    @property
    def completed_in_order(self) -> bool:
        """Whether trials completed in the order they were suggested (FIFO)."""
        return self.completed == self.suggested[: len(self.completed)]


@dataclass(frozen=True)
class Finished:
    """One trial's final config and metrics (never ``None``)."""

    config: dict[str, Any]
    metrics: dict[str, Any]


def finished_trials(grid: ResultGrid) -> list[Finished]:
    """Every trial of a Tuner run, asserting that none errored."""
    assert grid.num_errors == 0, grid.errors
    out: list[Finished] = []
    for i in range(len(grid)):
        result = grid[i]
        assert result.config is not None and result.metrics is not None
        out.append(Finished(result.config, result.metrics))
    return out


def best_trial(grid: ResultGrid, metric: str = "loss", mode: str = "min") -> Finished:
    """The run's best trial (``ResultGrid.get_best_result``)."""
    result = grid.get_best_result(metric=metric, mode=mode)
    assert result.config is not None and result.metrics is not None
    return Finished(result.config, result.metrics)


@contextlib.contextmanager
def two_node_cluster(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Any]:
    """A ``ray.cluster_utils.Cluster``: a head and a worker node with one CPU each and no GPU,
    in :func:`ray_environment`, with ``ray.init`` connected to it; yields
    ``(cluster, worker_node, base)`` and shuts everything down afterwards."""
    with ray_environment(tmp_path_factory, name) as base:
        import ray
        from ray.cluster_utils import Cluster

        assert not ray.is_initialized(), "another test left Ray running"
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
        )
        try:
            worker = cluster.add_node(num_cpus=1, num_gpus=0)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
            yield cluster, worker, base
        finally:
            ray.shutdown()
            cluster.shutdown()


def relative_error(eta: float, eta_star: float) -> float:
    """``|η − η*| / η*``."""
    return abs(eta - eta_star) / eta_star


def check_convergence(
    eta: float, eta_star: float, search: OrderRecordingSearch, tol: float = 1e-6
) -> None:
    """Assert ``|η − η*| ≤ tol·η*``; a miss in a run that completed out of order is the
    known order-dependence bug and is reported as xfail (after a 5 % sanity bound)."""
    err = relative_error(eta, eta_star)
    if err <= tol:
        return
    assert err <= 0.05, f"eta={eta!r} is {err:.2e} (relative) from eta*={eta_star!r}"
    if not search.completed_in_order:
        pytest.xfail(
            f"{ORDER_BUG}; this run's trials completed out of suggestion order and its best "
            f"step size is {err:.2e} (relative) from eta*"
        )
    raise AssertionError(
        f"trials completed in suggestion order, yet eta={eta!r} is {err:.2e} (relative) "
        f"from eta*={eta_star!r} (> {tol:g})"
    )
