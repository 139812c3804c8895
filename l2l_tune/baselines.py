"""Gradient-free baselines on the same meta-objective: grid search and random search.

They share :class:`~l2l_tune.tuner.TuningResultMixin` with
:class:`~l2l_tune.tuner.StepSizeTuner`, so results compare like for like. The
paper's Section 5 picks the step size by a 25-point log grid,
``logspace(-6, 0, 25)``, reusing the same tasks at every point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from ._validation import check_choice, check_horizon, check_positive, check_step_size
from .tasks.base import SPLITS, MetaObjectiveTask
from .tuner import EvalRecord, TuningResultMixin, _check_task

__all__ = ["GridSearch", "RandomSearch"]


class _SearchBase(TuningResultMixin):
    def _candidates(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(
        self, task: MetaObjectiveTask, t: int, split: str = "train", log: bool = True
    ) -> _SearchBase:
        """Evaluate the meta-objective at every candidate; keep the lowest.

        Non-finite values (which the package's tasks never return, but a user's
        task might) are recorded and never chosen.

        Args:
            task: Any :class:`~l2l_tune.tasks.MetaObjectiveTask`.
            t: Inner GD steps, ``≥ 1``.
            split: ``"train"`` or ``"valid"``.
            log: Evaluate ``(1/t)·log`` of the meta-loss.

        Returns:
            ``self``, fitted.

        Raises:
            ValueError: for bad arguments, or when every candidate's value is non-finite.
        """
        task = _check_task(task)
        t = check_horizon(t)
        check_choice(split, "split", SPLITS)
        history: list[EvalRecord] = []
        for eta in self._candidates():
            start = time.perf_counter()
            value = float(task.meta_objective(float(eta), t, split=split, log=log))
            history.append(EvalRecord(float(eta), value, None, time.perf_counter() - start))
        finite = [r for r in history if math.isfinite(r.value)]
        if not finite:
            raise ValueError("every candidate step size gave a non-finite meta-objective")
        best = min(finite, key=lambda r: r.value)
        self.history_ = history
        self.step_size_ = best.eta
        self.meta_objective_ = best.value
        return self


class GridSearch(_SearchBase):
    """Evaluate a fixed grid of step sizes (default: the paper's ``logspace(-6, 0, 25)``).

    Args:
        grid: Explicit step sizes (each ``≥ 0``); overrides the other arguments.
        low: Smallest step size of the generated grid, ``> 0``.
        high: Largest, ``> low``.
        n_points: Number of grid points, ``≥ 1``.
        log_scale: Log-spaced (default) or linearly spaced grid.

    Raises:
        ValueError: at :meth:`fit`, for a bad grid or bounds.
    """

    def __init__(
        self,
        grid: Sequence[float] | None = None,
        low: float = 1e-6,
        high: float = 1.0,
        n_points: int = 25,
        log_scale: bool = True,
    ) -> None:
        self.grid = grid
        self.low = low
        self.high = high
        self.n_points = n_points
        self.log_scale = log_scale

    def _candidates(self) -> np.ndarray:
        if self.grid is not None:
            values = [check_step_size(g, "grid") for g in self.grid]
            if not values:
                raise ValueError("grid must contain at least one step size")
            return np.asarray(values)
        low = check_positive(self.low, "low")
        high = check_positive(self.high, "high")
        if not high > low:
            raise ValueError(f"high must be > low, got low={low}, high={high}")
        n = check_horizon(self.n_points, "n_points")
        if self.log_scale:
            return np.logspace(math.log10(low), math.log10(high), n)
        return np.linspace(low, high, n)


class RandomSearch(_SearchBase):
    """Evaluate step sizes drawn log-uniformly (or uniformly) from ``[low, high]``.

    Args:
        n_evals: Number of draws, ``≥ 1``.
        low: Lower bound, ``> 0``.
        high: Upper bound, ``> low``.
        log_scale: Draw ``log η`` uniformly (default) or ``η`` uniformly.
        seed: Seed for reproducibility.

    Raises:
        ValueError: at :meth:`fit`, for bad bounds or counts.
    """

    def __init__(
        self,
        n_evals: int = 25,
        low: float = 1e-6,
        high: float = 1.0,
        log_scale: bool = True,
        seed: int | None = None,
    ) -> None:
        self.n_evals = n_evals
        self.low = low
        self.high = high
        self.log_scale = log_scale
        self.seed = seed

    def _candidates(self) -> np.ndarray:
        low = check_positive(self.low, "low")
        high = check_positive(self.high, "high")
        if not high > low:
            raise ValueError(f"high must be > low, got low={low}, high={high}")
        n = check_horizon(self.n_evals, "n_evals")
        rng = np.random.default_rng(self.seed)
        if self.log_scale:
            return np.exp(rng.uniform(math.log(low), math.log(high), n))
        return rng.uniform(low, high, n)
