"""``MetaGradientSearch``: Ray Tune's suggest/complete <-> the ask/tell meta-optimizers.

Trials are grouped into *meta-steps*: with ``tasks_per_step = m`` the searcher
hands the same step size to ``m`` trials with ``config["task_seed"] = 0 … m−1``
and, once their results are in, tells the meta-optimizer their average (the
meta-objective ``F̂(η) = (1/m) Σ_i Δ(η, P_i)`` of the paper's Section 2). With more
concurrent trials than ``m``, further meta-steps start at once at step sizes that
avoid the running ones (a parallel line search), so ``N`` workers stay busy.

The searcher's state is the list of meta-steps; the meta-optimizer is rebuilt from
it (through :mod:`l2l_tune.meta.driver`, the same code as the Optuna sampler's),
so ``save``/``restore`` (and ``Tuner.restore``) continue exactly where a run stopped.
"""

from __future__ import annotations

import copy
import math
import numbers
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from l2l_tune._validation import (
    check_choice,
    check_horizon,
    check_positive,
    check_relative_step,
)
from l2l_tune.meta import (
    META_OPTIMIZER_CHOICES,
    MetaOptimizer,
    make_meta_optimizer,
    resolve_meta_optimizer,
)
from l2l_tune.meta.base import NonFiniteMetaGradientWarning
from l2l_tune.meta.driver import Evaluation, propose, records_from_evaluations
from l2l_tune.meta.vector import check_names
from l2l_tune.tasks.base import is_exact_task

try:
    from ray import tune
    from ray.tune.search import Searcher
    from ray.tune.search.sample import Float
    from ray.tune.utils import flatten_dict
except ImportError as exc:  # pragma: no cover - exercised only without ray
    raise ImportError(
        "l2l_tune.integrations.ray needs Ray Tune: pip install 'l2l-tune[ray]'"
    ) from exc

from ._space import (
    PATH_SEPARATOR,
    check_space,
    config_value,
    find_path,
    float_domain,
    is_log,
    resolve_config,
    step_size_domains,
)

__all__ = ["EXACT_KEY", "MetaGradientSearch", "task_trainable", "with_resources"]

#: Result key by which a trainable says its metric is an exact, deterministic closed form
#: (:func:`task_trainable` sets it); ``meta_optimizer="auto"`` then uses the bracket.
EXACT_KEY = "exact_meta_objective"


@dataclass
class _MetaStep:
    """One meta-step: ``m`` trials at one step size, one per task seed."""

    key: int
    eta: float
    role: str | None
    pair: int | None
    seeds_left: list[int]
    fd_step: float | None = None
    exact: bool = True  # every result so far said EXACT_KEY: True
    trials: dict[str, int] = field(default_factory=dict)  # trial id -> task seed
    results: dict[int, tuple[float, float | None]] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    #: Entries of a ``points_to_evaluate`` point, by path (set in every trial's config).
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Tasks of this meta-step; ``None``: ``tasks_per_step``. An evaluated point told
    #: from outside (``evaluated_rewards``, ``add_evaluated_point``) counts as one.
    n_tasks: int | None = None
    #: Told from outside as pruned: its value is partial.
    pruned: bool = False

    def done(self, m: int) -> bool:
        n = m if self.n_tasks is None else self.n_tasks
        return not self.seeds_left and len(self.results) + len(self.failed) == n

    def evaluation(self, m: int) -> Evaluation:
        """This meta-step as an engine evaluation: the average over its ``m`` tasks.

        A failed task (an error, a missing, non-numeric or non-finite metric) makes
        the whole meta-step failed (value ``None``: a diverged run at ``η``); a
        task without a usable gradient makes it value-only.
        """
        running = not self.done(m)
        value: float | None = None
        grad: float | None = None
        if not running and self.results and not self.failed:
            values = [v for v, _ in self.results.values()]
            grads = [g for _, g in self.results.values()]
            value = math.fsum(values) / len(values)
            if all(g is not None for g in grads):
                grad = math.fsum(grads) / len(grads)  # type: ignore[arg-type]
        return Evaluation(
            self.key,
            self.eta,
            value,
            grad,
            running,
            self.role,
            self.pair,
            self.fd_step,
            pruned=self.pruned,
        )

    def running_trials(self) -> list[str]:
        """The ids of this meta-step's trials that have not completed."""
        finished = set(self.results) | self.failed
        return [trial for trial, seed in self.trials.items() if seed not in finished]


class _StatefulSearcher(Searcher):
    """The plumbing of the searchers whose whole state is ``get_state()``: the Tuner's
    metric, mode and ``param_space``, pickled checkpoints (``Tuner.restore``) and the
    concurrency limit of a ``ConcurrencyLimiter`` / ``max_concurrent_trials``."""

    _space: dict[str, Any] | None
    _max_concurrent: int | None = None

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Take metric, mode and the Tuner's ``param_space`` (unless set in ``__init__``)."""
        if self._space is not None and config:
            return False
        if metric:
            self._metric = metric
        if mode:
            check_choice(mode, "mode", ("min", "max"))
            self._mode = mode
        if config:
            self._space = dict(config)
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Honour Ray's concurrency limit here (``TuneConfig(max_concurrent_trials=N)`` or a
        ``ConcurrencyLimiter``): :meth:`suggest` returns ``None`` while ``N`` trials run.

        Returns:
            ``True``: the searcher handles the limit itself.

        Raises:
            ValueError: for ``max_concurrent < 1``.
        """
        self._max_concurrent = check_horizon(max_concurrent, "max_concurrent")
        return True

    def _at_concurrency_limit(self) -> bool:
        return self._max_concurrent is not None and self._n_running() >= self._max_concurrent

    def _n_running(self) -> int:
        """Trials suggested and not completed."""
        raise NotImplementedError

    _rng: np.random.RandomState

    def _common_state(self) -> dict[str, Any]:
        """The part of the state every searcher has: RNG, metric, mode, space and limit."""
        return {
            "rng": self._rng.get_state(),
            "metric": self._metric,
            "mode": self._mode,
            "space": self._space,
            "max_concurrent": self._max_concurrent,
        }

    def _set_common_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_common_state`'s part of a state."""
        self._rng.set_state(state["rng"])
        self._metric = state["metric"]
        self._mode = state["mode"]
        if state.get("space") is not None:
            self._space = state["space"]
        if state.get("max_concurrent") is not None:
            self._max_concurrent = state["max_concurrent"]

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue."""
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s result."""
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        """Pickle the state to ``checkpoint_path`` (Tune calls this for experiment checkpoints)."""
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        """Load a state written by :meth:`save`."""
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))


class MetaGradientSearch(_StatefulSearcher):
    """Ray Tune searcher that tunes a step size by meta-gradient descent.

    The trainable reports ``metric`` and, when it can, the derivative of the
    metric with respect to the step size under ``grad_metric`` (default
    ``f"{metric}_grad"``; Ray flattens nested results, so ``{"grad": {"lr": g}}``
    is found as ``"grad/lr"``). Without it, a finite difference from paired
    meta-steps (``η·e^{−h/2}`` and ``η·e^{h/2}``) is used, as in the Optuna sampler.

    Every outcome of a trial is information, with the policy of the Optuna sampler
    (``docs/trial_outcomes.md``): an errored trial, a result without a numeric
    ``metric`` and a NaN or infinite ``metric`` make their meta-step a failed run,
    told as diverged ``(η, inf, None)``; a finite metric whose meta-gradient is
    missing, NaN or infinite is told as a value-only record. Neither step size is
    proposed again (nor are those of running meta-steps), so errors never freeze
    the search on one step size.

    The rest of the search space is resolved as Ray resolves it
    (:mod:`l2l_tune.integrations.ray._space`): domains anywhere in nested dicts, lists
    and tuples, quantized domains with their quantum, ``tune.sample_from`` functions
    (which may read the step size); a ``tune.grid_search`` is refused.

    Ray's extension points: ``points_to_evaluate`` run first (a meta-step each);
    with ``evaluated_rewards`` they are told without running (warm start);
    :meth:`add_evaluated_point` and :meth:`add_evaluated_trials` tell results from
    elsewhere (an earlier run, with its meta-gradients when the trials reported
    them); :meth:`set_max_concurrency` makes the searcher honour
    ``max_concurrent_trials`` itself.

    Args:
        param: The step size's key in the search space, or its ``/``-separated path
            (``"optimizer/lr"``); ``None``: the only continuous float domain with
            ``0 ≤ lower`` at the top level of the space, or else the only one anywhere.
        metric: Metric to minimise or maximise (or set by ``TuneConfig``).
        mode: ``"min"`` or ``"max"`` (or set by ``TuneConfig``).
        grad_metric: Result key of the metric's derivative in the step size.
        space: Search space (else the Tuner's ``param_space``). The step size must
            be a ``tune.uniform``/``tune.loguniform`` with ``0 ≤ lower`` (not
            quantized); other domains are sampled from their distributions with ``seed``.
        meta_optimizer: ``"auto"`` (default): the bracketing search when the
            metric is exact and deterministic (``deterministic=True``, or every
            result so far carried ``EXACT_KEY: True``, as :func:`task_trainable`'s
            on the closed-form tasks do), else the model-based ``"model"`` (values
            and gradients, no finite-difference pairs). Or a name: ``"bracket"``,
            ``"model"``, ``"paper"``, ``"adam"``.
        deterministic: Tell ``"auto"`` the metric is exact (``True``) or not
            (``False``); ``None`` decides from the results.
        eta0: First step size (default: geometric mean of the bounds for a
            log-uniform domain, else 0.1·upper or the midpoint).
        log_objective: Work on ``log(metric)`` when values are positive (Theorem 4).
        tasks_per_step: Trials (task seeds) averaged per meta-step, ``m ≥ 1``.
        seed: Seed for the other parameters.
        fd_step: Relative spacing of finite-difference pairs, in ``(0, 1)``.
        meta_optimizer_options: Extra arguments of the meta-optimizer.
        points_to_evaluate: Configurations to run first, each a meta-step of
            ``tasks_per_step`` trials; each gives the step size (by key or path, nested
            or flattened) and may fix other entries; the rest is sampled.
        evaluated_rewards: The metric already measured at each of
            ``points_to_evaluate`` (same length): those points are told as value-only
            records and not run.
        seed_key: The config key that carries the task index of a meta-step
            (``0 … tasks_per_step − 1``); the search space must not have it.

    Raises:
        ValueError: for an unknown meta-optimizer or ``mode``, ``tasks_per_step < 1``,
            ``fd_step`` outside ``(0, 1)`` or ``eta0 ≤ 0``, ``evaluated_rewards``
            without points or of another length, an empty ``seed_key``; at the first
            ``suggest``, for a space without a suitable step-size domain, with a
            ``tune.grid_search`` or with the ``seed_key``, and for a point without the
            step size or outside its bounds.
    """

    def __init__(
        self,
        param: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        *,
        grad_metric: str | None = None,
        space: Mapping[str, Any] | None = None,
        meta_optimizer: str = "auto",
        deterministic: bool | None = None,
        eta0: float | None = None,
        log_objective: bool = True,
        tasks_per_step: int = 1,
        seed: int | None = None,
        fd_step: float = 0.02,
        meta_optimizer_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        evaluated_rewards: Sequence[float] | None = None,
        seed_key: str = "task_seed",
    ) -> None:
        if mode is not None:
            check_choice(mode, "mode", ("min", "max"))
        check_choice(meta_optimizer, "meta_optimizer", META_OPTIMIZER_CHOICES)
        if deterministic is not None and not isinstance(deterministic, bool):
            raise ValueError(f"deterministic must be None, True or False, got {deterministic!r}")
        self.deterministic = deterministic
        super().__init__(metric=metric, mode=mode)
        self.param = param
        self.grad_metric = grad_metric
        self._space: dict[str, Any] | None = dict(space) if space is not None else None
        self.meta_optimizer = meta_optimizer
        self.eta0 = None if eta0 is None else check_positive(eta0, "eta0")
        self.log_objective = bool(log_objective)
        self.tasks_per_step = check_horizon(tasks_per_step, "tasks_per_step")
        self.fd_step = check_relative_step(fd_step)
        self.meta_optimizer_options = dict(meta_optimizer_options or {})
        if not isinstance(seed_key, str) or not seed_key:
            raise ValueError(f"seed_key must be a non-empty string, got {seed_key!r}")
        self.seed_key = seed_key
        points = [_checked_point(p, i) for i, p in enumerate(points_to_evaluate or [])]
        rewards: list[float | None] = [None] * len(points)
        if evaluated_rewards is not None:
            if len(evaluated_rewards) != len(points):
                raise ValueError(
                    f"evaluated_rewards must have one value per point of points_to_evaluate "
                    f"({len(points)}), got {len(evaluated_rewards)}"
                )
            rewards = [_checked_reward(r, i) for i, r in enumerate(evaluated_rewards)]
        self._rng = np.random.RandomState(seed)
        self._steps: list[_MetaStep] = []
        self._trial_step: dict[str, int] = {}
        #: Points not yet made into meta-steps (the step-size name needs the space).
        self._points: list[_Point] = [
            _Point(point, evaluated_rewards is not None, reward)
            for point, reward in zip(points, rewards, strict=True)
        ]

    # ------------------------------------------------------------------ Ray's interface
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next trial's config: the current meta-step's step size and a task seed
        (``None`` while ``max_concurrent`` trials run)."""
        name, path, domain = self._step_size_domain()
        assert self._space is not None
        check_space(self._space, type(self).__name__, reserved=self.seed_key)
        self._take_points()
        if self._at_concurrency_limit():
            return None
        step = next((s for s in self._steps if s.seeds_left), None)
        if step is None:
            step = self._new_step(domain)
        seed = step.seeds_left.pop(0)
        step.trials[trial_id] = seed
        self._trial_step[trial_id] = step.key
        fixed: dict[tuple[Any, ...], Any] = {
            _point_path(self._space, key): value for key, value in step.overrides.items()
        }
        fixed[path] = step.eta
        config = resolve_config(self._space, fixed, self._rng)
        config[self.seed_key] = seed
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Record the trial's metric (and meta-gradient) as the policy of
        ``docs/trial_outcomes.md`` says, the same as the Optuna sampler's.

        An errored trial (``error=True``), a result without a numeric metric and a
        NaN or infinite metric are failed runs: their meta-step is told as diverged
        ``(η, inf, None)`` and its step size is not proposed again. A finite metric
        with a missing, NaN or infinite meta-gradient is kept as a value-only record.
        """
        key = self._trial_step.get(trial_id)
        if key is None:
            return
        step = self._steps[key]
        seed = step.trials[trial_id]
        if seed in step.results or seed in step.failed:
            return
        if not (result is not None and result.get(EXACT_KEY) is True):
            step.exact = False
        outcome = self._outcome(trial_id, result, error)
        if outcome is None:
            step.failed.add(seed)
        else:
            step.results[seed] = outcome

    def add_evaluated_point(
        self,
        parameters: Mapping[str, Any],
        value: float | None,
        error: bool = False,
        pruned: bool = False,
        intermediate_values: Sequence[float] | None = None,
        gradient: float | None = None,
    ) -> None:
        """Tell a result measured elsewhere (Ray's ``Searcher.add_evaluated_point``).

        It becomes a finished meta-step of one task at ``parameters``' step size,
        under the same policy as a trial of this search: ``error`` or a missing,
        NaN or infinite ``value`` is a failed run at that step size; ``pruned`` keeps
        ``value`` (else the last of ``intermediate_values``) as a partial record;
        ``gradient``, the metric's derivative in the step size, makes it a gradient
        record (:meth:`add_evaluated_trials` passes the one the trial reported).

        Args:
            parameters: The configuration (nested or flattened) with the step size.
            value: Its metric.
            error: The run failed.
            pruned: The run was stopped early.
            intermediate_values: Its metric over the run (used when pruned without ``value``).
            gradient: The metric's derivative in the step size, when known.

        Raises:
            ValueError: for ``parameters`` that are not a mapping (at once), or without the
                step size or outside its bounds (once the space is known).
        """
        point = _checked_point(parameters, None)
        if pruned and value is None and intermediate_values:
            value = intermediate_values[-1]
        self._points.append(
            _Point(
                point,
                True,
                _finite_or_none(value),
                _finite_or_none(gradient),
                bool(error),
                bool(pruned),
            )
        )
        if self._space is not None:
            self._take_points()

    def add_evaluated_trials(self, trials_or_analysis: Any, metric: str) -> None:
        """Tell the trials of an earlier run (a ``Trial``, a list of them, or an
        ``ExperimentAnalysis``), with the meta-gradients they reported.

        Ray's own version drops everything but the metric; this one also reads the
        derivative under ``grad_metric`` (default ``f"{metric}_grad"``), so a run that
        reported gradients warm-starts a new one with gradient records. A trial
        without ``metric`` in its last result is skipped.

        Raises:
            ValueError: for something that is not a trial, a list of trials or an analysis.
        """
        from ray.tune.analysis import ExperimentAnalysis
        from ray.tune.experiment import Trial
        from ray.tune.result import DONE

        if isinstance(trials_or_analysis, Trial):
            trials = [trials_or_analysis]
        elif isinstance(trials_or_analysis, list | tuple):
            trials = list(trials_or_analysis)
        elif isinstance(trials_or_analysis, ExperimentAnalysis):
            trials = list(trials_or_analysis.trials)
        else:
            raise ValueError(
                "trials_or_analysis must be a ray.tune Trial, a list of them or an "
                f"ExperimentAnalysis, got {type(trials_or_analysis).__name__}"
            )
        name = self.param
        if self._space is not None:
            name = self._step_size_domain()[0]
        grad_key = self.grad_metric or f"{metric}_grad"
        for trial in trials:
            result = trial.last_result or {}
            if metric not in result:
                continue
            pruned = trial.status == Trial.TERMINATED and not result.get(DONE, False)
            grad = None if name is None else _reported_gradient(result, grad_key, name)
            try:
                gradient = None if grad is None else float(grad)
            except (TypeError, ValueError):
                gradient = None
            self.add_evaluated_point(
                trial.config,
                result.get(metric),
                error=trial.status == Trial.ERROR,
                pruned=pruned,
                gradient=gradient,
            )

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue: meta-steps, trial map, points not yet used,
        RNG, metric, mode, space and concurrency limit."""
        return {
            "steps": copy.deepcopy(self._steps),
            "trial_step": dict(self._trial_step),
            "points": copy.deepcopy(self._points),
            **self._common_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s result."""
        self._steps = copy.deepcopy(state["steps"])
        self._trial_step = dict(state["trial_step"])
        self._points = copy.deepcopy(state.get("points", []))
        self._set_common_state(state)

    # ------------------------------------------------------------------ results
    def meta_optimizer_state(self) -> MetaOptimizer:
        """The meta-optimizer rebuilt from the finished meta-steps (for inspection);
        its ``estimate()`` is the current best step size."""
        _, _, domain = self._step_size_domain()
        self._take_points()
        return self._optimizer(domain)

    @property
    def n_meta_steps(self) -> int:
        """Finished meta-steps (evaluated points told from outside included)."""
        if self._space is not None:
            self._take_points()
        return sum(s.done(self.tasks_per_step) for s in self._steps)

    # ------------------------------------------------------------------ internals
    def _n_running(self) -> int:
        return sum(len(s.running_trials()) for s in self._steps)

    def _outcome(
        self, trial_id: str, result: Mapping[str, Any] | None, error: bool
    ) -> tuple[float, float | None] | None:
        """A trial's ``(value, gradient or None)``, or ``None`` for a failed run."""
        value = None if (error or result is None) else result.get(self.metric)
        if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            if not error and result is not None:
                warnings.warn(
                    f"trial {trial_id} reported no numeric {self.metric!r}; counted as a "
                    "failed run at its step size",
                    UserWarning,
                    stacklevel=3,
                )
            return None
        if not math.isfinite(float(value)):
            warnings.warn(
                f"trial {trial_id} reported {self.metric}={value}; treated as a diverged run "
                "(the step size is too large)",
                NonFiniteMetaGradientWarning,
                stacklevel=3,
            )
            return None
        grad_key = self.grad_metric or f"{self.metric}_grad"
        grad = _reported_gradient(result, grad_key, self._step_size_domain()[0])
        grad_f: float | None = None
        if grad is not None:
            try:
                grad_f = float(grad)
            except (TypeError, ValueError):
                grad_f = math.nan
            if not math.isfinite(grad_f):
                warnings.warn(
                    f"trial {trial_id} reported a non-finite meta-gradient {grad}; dropped, "
                    f"its {self.metric} is kept",
                    NonFiniteMetaGradientWarning,
                    stacklevel=3,
                )
                grad_f = None
        return float(value), grad_f

    def _step_size_domain(self) -> tuple[str, tuple[Any, ...], Float]:
        """The step size's name (path), path and domain."""
        if self._space is None:
            raise ValueError(
                "MetaGradientSearch has no search space: pass space=... or a Tuner param_space"
            )
        if self.param is not None:
            path, domain = float_domain(self._space, self.param, f"param {self.param!r}")
            return self.param, path, domain
        candidates = step_size_domains(self._space)
        top_level = [name for name in candidates if name in self._space]
        if len(top_level) == 1:
            candidates = top_level
        if len(candidates) != 1:
            raise ValueError(
                "param=None needs exactly one tune.uniform/tune.loguniform domain with "
                "lower >= 0 at the top level of the search space, or exactly one anywhere in "
                f"it; found {candidates}. Pass param=..."
            )
        path, domain = float_domain(self._space, candidates[0], f"param {candidates[0]!r}")
        return candidates[0], path, domain

    def _take_points(self) -> None:
        """Make the waiting points (``points_to_evaluate``, evaluated points) meta-steps."""
        if not self._points:
            return
        name, _, domain = self._step_size_domain()
        low, high = self._bounds(domain)
        assert self._space is not None
        for told in self._points:
            point = {k: v for k, v in told.point.items() if k != self.seed_key}
            eta = point.get(name)
            if eta is None or isinstance(eta, bool) or not isinstance(eta, numbers.Real):
                raise ValueError(
                    f"a point to evaluate must give the step size {name!r} as a number, "
                    f"got {point!r}"
                )
            if not low <= float(eta) <= high:
                raise ValueError(
                    f"a point to evaluate has {name}={eta}, outside the step size's bounds "
                    f"[{low:g}, {high:g}]"
                )
            others: dict[str, Any] = {}
            if not told.evaluated:  # a point to run: its other entries go into the configs
                others = {k: v for k, v in point.items() if k != name}
                for key in others:
                    _point_path(self._space, key)  # raises for a key not in the space
            step = _MetaStep(
                key=len(self._steps),
                eta=float(eta),
                role=None,
                pair=None,
                seeds_left=[] if told.evaluated else list(range(self.tasks_per_step)),
                exact=False,
                overrides=others,
                n_tasks=1 if told.evaluated else None,
                pruned=told.pruned,
            )
            if told.evaluated:
                if told.error or told.value is None:
                    step.failed.add(0)
                else:
                    step.results[0] = (told.value, told.gradient)
            self._steps.append(step)
        self._points = []

    def _bounds(self, domain: Float) -> tuple[float, float]:
        return float(domain.lower), float(domain.upper)

    def _meta_optimizer_name(self) -> str:
        """The registry name ``meta_optimizer`` stands for now (resolves ``"auto"``)."""
        if self.meta_optimizer != "auto":
            return self.meta_optimizer
        exact = self.deterministic
        if exact is None:
            finished = [s for s in self._steps if s.results or s.failed]
            exact = bool(finished) and all(getattr(s, "exact", False) for s in finished)
        return resolve_meta_optimizer("auto", exact=exact)

    def recommended_step_size(self) -> float:
        """The step size to train with after the run: the meta-optimizer's recommendation
        (for the model-based search the minimiser of the posterior mean, not the
        luckiest noisy trial that ``ResultGrid.get_best_result`` returns)."""
        return float(self.meta_optimizer_state().estimate())

    def _optimizer(
        self, domain: Float, evaluations: list[Evaluation] | None = None
    ) -> MetaOptimizer:
        low, high = self._bounds(domain)
        if self.eta0 is not None:
            eta0 = self.eta0
        elif is_log(domain) and low > 0:
            eta0 = math.sqrt(low * high)
        else:
            eta0 = 0.5 * (low + high) if low > 0 else 0.1 * high
        options = dict(self.meta_optimizer_options)
        options["bounds"] = (low, high)
        optimizer = make_meta_optimizer(self._meta_optimizer_name(), eta0=eta0, **options)
        if evaluations is None:
            evaluations = [s.evaluation(self.tasks_per_step) for s in self._steps]
        records = records_from_evaluations(
            evaluations,
            log_objective=self.log_objective,
            maximize=self._mode == "max",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for record in records:
                optimizer.tell(record.eta, record.value, record.grad, partial=record.partial)
        return optimizer

    def _new_step(self, domain: Float) -> _MetaStep:
        evaluations = [s.evaluation(self.tasks_per_step) for s in self._steps]
        proposal = propose(
            self._optimizer(domain, evaluations),
            evaluations,
            fd_step=self.fd_step,
            bounds=self._bounds(domain),
        )
        step = _MetaStep(
            key=len(self._steps),
            eta=float(proposal.eta),
            role=proposal.role,
            pair=None if proposal.pair is None else int(proposal.pair),  # type: ignore[call-overload]
            seeds_left=list(range(self.tasks_per_step)),
            fd_step=proposal.fd_step,
        )
        self._steps.append(step)
        return step


@dataclass
class _Point:
    """A configuration given to the searcher, waiting to become a meta-step.

    Attributes:
        point: The configuration, flattened to ``/``-separated keys.
        evaluated: Its result is known (told, not run).
        value: That result's metric (``None``: a failed run).
        gradient: Its derivative in the step size, when known.
        error: The run failed.
        pruned: The run was stopped early (``value`` is partial).
    """

    point: dict[str, Any]
    evaluated: bool
    value: float | None = None
    gradient: float | None = None
    error: bool = False
    pruned: bool = False


def _checked_point(point: Any, index: int | None) -> dict[str, Any]:
    """A configuration given to the searcher, flattened to ``/``-separated keys."""
    if not isinstance(point, Mapping):
        where = "parameters" if index is None else f"points_to_evaluate[{index}]"
        raise ValueError(f"{where} must be a mapping of config keys to values, got {point!r}")
    return dict(flatten_dict(dict(point), delimiter=PATH_SEPARATOR))


def _checked_reward(reward: Any, index: int) -> float | None:
    """One of ``evaluated_rewards``: a real number (NaN or ±inf: a failed run)."""
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
        raise ValueError(f"evaluated_rewards[{index}] must be a number, got {reward!r}")
    return _finite_or_none(reward)


def _finite_or_none(value: Any) -> float | None:
    """``float(value)`` when it is a finite real number, else ``None``."""
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _point_path(space: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    path = find_path(space, key)
    if path is None:
        raise ValueError(
            f"a point to evaluate sets {key!r}, which is not in the search space; add it to "
            "the param_space"
        )
    return path


def _reported_gradient(result: Mapping[str, Any] | None, grad_key: str, name: str) -> Any:
    """The derivative in ``name`` a result reports: under ``grad_key`` itself, or in a
    mapping by parameter name there (flattened by Ray to ``grad_key/name``, or not);
    ``None`` for none or for a per-group list."""
    if result is None:
        return None
    grad = result.get(grad_key)
    if grad is None:  # a mapping by parameter name, flattened by Ray
        grad = result.get(f"{grad_key}/{name}")
    elif isinstance(grad, Mapping):  # the same, not flattened (a direct call)
        grad = grad.get(name)
    if isinstance(grad, list | tuple):  # per-group derivatives: no single value
        return None
    return grad


def task_trainable(
    task: Any,
    t: int,
    *,
    split: str = "train",
    param: str = "lr",
    metric: str = "loss",
    grad_metric: str | None = None,
    params: Sequence[str] | None = None,
    seed_key: str = "task_seed",
) -> Callable[[dict[str, Any]], None]:
    """A Tune function trainable for one of the library's tasks (value and meta-gradient).

    With ``params`` (several names, for :class:`HypergradientSearch`) the task must be
    a :class:`~l2l_tune.tasks.HyperparameterTask`: the trainable reads every name from
    the config and reports the mapping of gradients
    (:meth:`~l2l_tune.tasks.HyperparameterTask.value_and_gradients`) under ``grad_metric``.

    Args:
        task: A task (:class:`~l2l_tune.tasks.Quadratic`,
            :class:`~l2l_tune.tasks.LeastSquaresBatch`, …) or a callable
            ``task_seed -> task``; the latter builds the task from
            ``config[seed_key]``, as :class:`MetaGradientSearch` hands out one
            seed per task of a meta-step (``tasks_per_step``).
        t: Inner GD steps.
        split: ``"train"`` (TbT) or ``"valid"`` (TbV).
        param: Config key (or ``/``-separated path) of the step size.
        metric: Result key of the meta-loss (the last loss, not its log).
        grad_metric: Result key of its derivative (default ``f"{metric}_grad"``).
        params: Config keys of several hyperparameters (instead of ``param``).
        seed_key: Config key of the task seed (the searcher's ``seed_key``).

    The closed-form tasks are NumPy code and run on the CPU; the result records
    ``"device"`` and the GPUs Ray assigned to the trial.

    Raises:
        ValueError: for ``t < 1`` or an unknown ``split``.
    """
    t = check_horizon(t)
    check_choice(split, "split", ("train", "valid"))
    grad_key = grad_metric or f"{metric}_grad"
    names = check_names(params, "params") if params is not None else None

    def trainable(config: dict[str, Any]) -> None:
        import ray

        current = (
            task(int(config.get(seed_key, 0)))
            if callable(task) and not hasattr(task, "value_and_gradient")
            else task
        )
        grad: Any
        if names is None:
            value, grad = current.value_and_gradient(
                float(config_value(config, param)), t, split=split, log=False
            )
        else:
            value, grad = current.value_and_gradients(
                {n: float(config_value(config, n)) for n in names}, t, split=split, log=False
            )
        gpus = [str(g) for g in ray.get_gpu_ids()]
        tune.report(
            {
                metric: value,
                grad_key: grad,
                EXACT_KEY: is_exact_task(current),
                "device": "cpu",
                "assigned_gpus": gpus,
            }
        )

    trainable.__name__ = f"l2l_{type(task).__name__.lower()}_trainable"
    return trainable


def with_resources(trainable: Any, resources: Mapping[str, float]) -> Any:
    """``tune.with_resources`` that fails fast when the cluster cannot ever satisfy a trial.

    Ray alone leaves a trial that asks for a GPU on a GPU-less cluster PENDING
    forever, silently. This checks the request against ``ray.cluster_resources()``
    (starting Ray if needed) first.

    Raises:
        ValueError: naming the resource, the amount asked and what the cluster has.
    """
    import ray

    if not ray.is_initialized():
        ray.init()
    available = ray.cluster_resources()
    for name, amount in resources.items():
        key = {"cpu": "CPU", "gpu": "GPU"}.get(name, name)
        have = float(available.get(key, 0.0))
        if float(amount) > have:
            raise ValueError(
                f"each trial asks for {amount} {key} but the Ray cluster has {have:g} in total; "
                "the trial would stay PENDING forever. Lower the request or add nodes with "
                f"{key}."
            )
    return tune.with_resources(trainable, dict(resources))
