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

from l2l_tune._validation import check_choice, check_horizon, check_positive
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
    from ray.tune.search.sample import Domain, Float
except ImportError as exc:  # pragma: no cover - exercised only without ray
    raise ImportError(
        "l2l_tune.integrations.ray needs Ray Tune: pip install 'l2l-tune[ray]'"
    ) from exc

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

    def done(self, m: int) -> bool:
        return not self.seeds_left and len(self.results) + len(self.failed) == m

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
            value = float(np.mean(values))
            if all(g is not None for g in grads):
                grad = float(np.mean(grads))  # type: ignore[arg-type]
        return Evaluation(
            self.key, self.eta, value, grad, running, self.role, self.pair, self.fd_step
        )


class _StatefulSearcher(Searcher):
    """The plumbing of the searchers whose whole state is ``get_state()``: the Tuner's
    metric, mode and ``param_space``, and pickled checkpoints (``Tuner.restore``)."""

    _space: dict[str, Any] | None

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

    Args:
        param: The step-size key of the search space; ``None``: its only float domain.
        metric: Metric to minimise or maximise (or set by ``TuneConfig``).
        mode: ``"min"`` or ``"max"`` (or set by ``TuneConfig``).
        grad_metric: Result key of the metric's derivative in the step size.
        space: Search space (else the Tuner's ``param_space``). The step size must
            be a ``tune.uniform``/``tune.loguniform`` with ``0 ≤ lower``; other
            domains are sampled from their distributions with ``seed``.
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
        fd_step: Relative spacing of finite-difference pairs, ``> 0``.
        meta_optimizer_options: Extra arguments of the meta-optimizer.

    Raises:
        ValueError: for an unknown meta-optimizer or ``mode``, ``tasks_per_step < 1``,
            ``fd_step ≤ 0`` or ``eta0 ≤ 0``; at the first ``suggest``, for a space
            without a suitable step-size domain.
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
        self.fd_step = check_positive(fd_step, "fd_step")
        self.meta_optimizer_options = dict(meta_optimizer_options or {})
        self._rng = np.random.RandomState(seed)
        self._steps: list[_MetaStep] = []
        self._trial_step: dict[str, int] = {}

    # ------------------------------------------------------------------ Ray's interface
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next trial's config: the current meta-step's step size and a task seed."""
        name, domain = self._step_size_domain()
        step = next((s for s in self._steps if s.seeds_left), None)
        if step is None:
            step = self._new_step(domain)
        seed = step.seeds_left.pop(0)
        step.trials[trial_id] = seed
        self._trial_step[trial_id] = step.key
        assert self._space is not None
        config = resolve_config(self._space, {name: step.eta}, self._rng)
        config["task_seed"] = seed
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
        value = None if (error or result is None) else result.get(self.metric)
        if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            if not error and result is not None:
                warnings.warn(
                    f"trial {trial_id} reported no numeric {self.metric!r}; counted as a "
                    "failed run at its step size",
                    UserWarning,
                    stacklevel=2,
                )
            step.failed.add(seed)
            return
        if not math.isfinite(float(value)):
            warnings.warn(
                f"trial {trial_id} reported {self.metric}={value}; treated as a diverged run "
                "(the step size is too large)",
                NonFiniteMetaGradientWarning,
                stacklevel=2,
            )
            step.failed.add(seed)
            return
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
                    stacklevel=2,
                )
                grad_f = None
        step.results[seed] = (float(value), grad_f)

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue: meta-steps, trial map, RNG, metric and mode."""
        return {
            "steps": copy.deepcopy(self._steps),
            "trial_step": dict(self._trial_step),
            "rng": self._rng.get_state(),
            "metric": self._metric,
            "mode": self._mode,
            "space": self._space,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s result."""
        self._steps = copy.deepcopy(state["steps"])
        self._trial_step = dict(state["trial_step"])
        self._rng.set_state(state["rng"])
        self._metric = state["metric"]
        self._mode = state["mode"]
        if state.get("space") is not None:
            self._space = state["space"]

    # ------------------------------------------------------------------ results
    def meta_optimizer_state(self) -> MetaOptimizer:
        """The meta-optimizer rebuilt from the finished meta-steps (for inspection);
        its ``estimate()`` is the current best step size."""
        _, domain = self._step_size_domain()
        return self._optimizer(domain)

    @property
    def n_meta_steps(self) -> int:
        """Finished meta-steps."""
        return sum(s.done(self.tasks_per_step) for s in self._steps)

    # ------------------------------------------------------------------ internals
    def _step_size_domain(self) -> tuple[str, Float]:
        if self._space is None:
            raise ValueError(
                "MetaGradientSearch has no search space: pass space=... or a Tuner param_space"
            )
        if self.param is not None:
            domain = self._space.get(self.param)
            if not _is_step_size_domain(domain):
                raise ValueError(
                    f"param {self.param!r} must be a tune.uniform or tune.loguniform domain "
                    f"with lower >= 0 in the search space, got {domain!r}"
                )
            assert isinstance(domain, Float)
            return self.param, domain
        floats = [k for k, v in self._space.items() if _is_step_size_domain(v)]
        if len(floats) != 1:
            raise ValueError(
                "param=None needs exactly one tune.uniform/tune.loguniform domain in the "
                f"search space; found {floats}. Pass param=..."
            )
        return floats[0], self._space[floats[0]]

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

    def _optimizer(self, domain: Float) -> MetaOptimizer:
        low, high = self._bounds(domain)
        if self.eta0 is not None:
            eta0 = self.eta0
        elif _is_log(domain) and low > 0:
            eta0 = math.sqrt(low * high)
        else:
            eta0 = 0.5 * (low + high) if low > 0 else 0.1 * high
        options = dict(self.meta_optimizer_options)
        options["bounds"] = (low, high)
        optimizer = make_meta_optimizer(self._meta_optimizer_name(), eta0=eta0, **options)
        records = records_from_evaluations(
            [s.evaluation(self.tasks_per_step) for s in self._steps],
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
            self._optimizer(domain),
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


def resolve_config(
    space: Mapping[str, Any], fixed: Mapping[str, float], rng: np.random.RandomState
) -> dict[str, Any]:
    """A trial's config: the top-level keys of ``fixed`` at their values, every other
    domain sampled with ``rng`` (nested dicts resolved), constants as they are."""
    config: dict[str, Any] = {}
    for key, value in space.items():
        if key in fixed:
            config[key] = fixed[key]
        elif isinstance(value, Domain):
            config[key] = value.sample(random_state=rng)
        elif isinstance(value, Mapping):
            config[key] = resolve_config(value, {}, rng)
        else:
            config[key] = value
    return config


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


def _is_step_size_domain(domain: Any) -> bool:
    return isinstance(domain, Float) and domain.lower is not None and domain.lower >= 0.0


def _is_log(domain: Float) -> bool:
    return "LogUniform" in type(domain.get_sampler()).__name__


def task_trainable(
    task: Any,
    t: int,
    *,
    split: str = "train",
    param: str = "lr",
    metric: str = "loss",
    grad_metric: str | None = None,
    params: Sequence[str] | None = None,
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
            ``config["task_seed"]``, as :class:`MetaGradientSearch` hands out one
            seed per task of a meta-step (``tasks_per_step``).
        t: Inner GD steps.
        split: ``"train"`` (TbT) or ``"valid"`` (TbV).
        param: Config key of the step size.
        metric: Result key of the meta-loss (the last loss, not its log).
        grad_metric: Result key of its derivative (default ``f"{metric}_grad"``).
        params: Config keys of several hyperparameters (instead of ``param``).

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
            task(int(config.get("task_seed", 0)))
            if callable(task) and not hasattr(task, "value_and_gradient")
            else task
        )
        grad: Any
        if names is None:
            value, grad = current.value_and_gradient(
                float(config[param]), t, split=split, log=False
            )
        else:
            value, grad = current.value_and_gradients(
                {n: float(config[n]) for n in names}, t, split=split, log=False
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
