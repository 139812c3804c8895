"""``HypergradientSampler``: several float parameters of a study tuned with their hypergradients.

The objective reports the derivatives of its value in the tuned parameters with
:func:`~l2l_tune.integrations.optuna.report_meta_gradient` (the mapping that the
drop-in optimizers' ``hypergradients()`` return); the sampler rebuilds a vector
meta-optimizer (:mod:`l2l_tune.meta.vector`: Adam on log-hyperparameters by
default, or projected meta-GD) from the study's finished trials and proposes the
next point. Like :class:`~l2l_tune.integrations.optuna.MetaGradientSampler` it
keeps no state of its own: workers sharing a storage and a resumed study see one
history. The parameters it does not tune go to an independent sampler.

What each finished trial tells (``docs/trial_outcomes.md``'s policy in several
dimensions):

* COMPLETE with a finite value and a number for every tuned parameter: a record;
* COMPLETE with a NaN or infinite value, or a FAIL this sampler marked (the
  objective raised or returned NaN): a diverged run; the next proposal goes back to
  the last finite point;
* COMPLETE without a finite gradient for every tuned parameter: a value-only record
  (no meta-step); PRUNED, or FAIL through the heartbeat (a killed worker): nothing.

The meta-optimizers are sequential: concurrent workers asking at the same moment
get the same point (replicate evaluations, each of which then steps the search).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from l2l_tune._validation import check_choice, check_horizon
from l2l_tune.meta import VECTOR_META_OPTIMIZERS
from l2l_tune.meta.base import NonFiniteMetaGradientWarning
from l2l_tune.meta.vector import (
    Hyperparameter,
    HyperparameterSpace,
    VectorMetaOptimizer,
    VectorRecord,
    check_names,
    check_start,
    log_objective_records,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from optuna import Study, Trial
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

    from l2l_tune.tasks.base import HyperparameterTask

import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from ._sampler import _FAILED_ATTR, GRADIENT_ATTR, _FromTrialsSampler, report_meta_gradient

__all__ = ["HypergradientSampler", "hyperparameter_objective"]

_PROPOSAL_ATTR = "l2l_tune:vector_proposal"


class HypergradientSampler(_FromTrialsSampler):
    """Tune several float parameters by meta-gradient descent on their reported hypergradients.

    ::

        sampler = HypergradientSampler(params=("lr", "weight_decay"))
        study = optuna.create_study(sampler=sampler)

        def objective(trial):
            lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
            wd = trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True)
            ...  # train with HypergradAdamW(lr=lr, weight_decay=wd)
            report_meta_gradient(trial, opt.hypergradients(val_loss))
            return val_loss.item()

    Each tuned parameter should be suggested as a continuous float
    (``suggest_float`` without ``step``): a ``log=True`` distribution is searched
    in ``log x``, a linear one as a fraction of its range; one suggested otherwise
    (an int, a quantized float, a categorical) goes to the independent sampler, with
    one warning. The first trial runs at
    ``start`` (default: the geometric mean of each log range, the midpoint of each
    linear one).

    Args:
        params: The names of the tuned parameters.
        meta_optimizer: ``"model"`` (:class:`~l2l_tune.meta.VectorGaussianProcess`,
            default: Bayesian optimisation on values and hypergradients, for noisy
            studies), ``"adam"`` (:class:`~l2l_tune.meta.VectorLogAdam`) or ``"paper"``
            (:class:`~l2l_tune.meta.VectorProjectedGD`).
        start: First point (a value for every tuned parameter), or ``None``.
        log_objective: Step on ``log(value)`` while every value is positive (the
            paper's log meta-objective, Theorem 4; the gradients are divided by the value).
        independent_sampler: Sampler for the other parameters (default
            :class:`optuna.samplers.RandomSampler` with ``seed``).
        seed: Seed of the default independent sampler.
        meta_optimizer_options: Extra arguments of the meta-optimizer (``lr``, …).

    Raises:
        ValueError: for no or repeated ``params``, an unknown ``meta_optimizer``;
            at sampling time, for a multi-objective study.
    """

    def __init__(
        self,
        params: Sequence[str],
        *,
        meta_optimizer: str = "model",
        start: Mapping[str, float] | None = None,
        log_objective: bool = True,
        independent_sampler: BaseSampler | None = None,
        seed: int | None = None,
        meta_optimizer_options: Mapping[str, Any] | None = None,
    ) -> None:
        names = check_names(params)
        self.params = names
        self.meta_optimizer = check_choice(
            meta_optimizer, "meta_optimizer", tuple(VECTOR_META_OPTIMIZERS)
        )
        self.start = check_start(start, names)
        self.log_objective = bool(log_objective)
        self.meta_optimizer_options = dict(meta_optimizer_options or {})
        super().__init__(independent_sampler, seed)

    # ------------------------------------------------------------------ Optuna's interface
    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        """The proposal's value for a tuned parameter; the independent sampler's otherwise."""
        self._raise_error_if_multi_objective(study)
        if param_name not in self.params:
            return self._sample_elsewhere(study, trial, param_name, param_distribution, None)
        if not _is_continuous(param_distribution):
            why = (
                f"{param_name!r} is suggested as {param_distribution!r}, not a continuous "
                f"float: {type(self).__name__} cannot step it"
            )
            return self._sample_elsewhere(study, trial, param_name, param_distribution, why)
        proposal = self._proposal(study, trial, param_name, param_distribution)
        low, high = param_distribution.low, param_distribution.high  # type: ignore[attr-defined]
        return min(max(float(proposal[param_name]), low), high)

    # ------------------------------------------------------------------ the search
    def meta_optimizer_for(self, study: Study) -> VectorMetaOptimizer:
        """The meta-optimizer rebuilt from the study's finished trials.

        Raises:
            ValueError: before any trial has suggested every tuned parameter.
        """
        space = self._space(study, {})
        if space is None:
            raise ValueError(
                f"no trial has suggested every tuned parameter {list(self.params)} yet"
            )
        return self._optimizer(study, space)

    def recommended_params(self, study: Study) -> dict[str, float]:
        """The tuned parameters to train with: the meta-optimizer's current estimate
        (the model's: the trial with the lowest posterior mean plus two standard
        deviations; Adam's and projected GD's: the last iterate, Theorem 4), not the
        luckiest trial of a noisy study."""
        return self.meta_optimizer_for(study).estimate()

    def _proposal(
        self, study: Study, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> dict[str, float]:
        storage = study._storage
        stored = storage.get_trial(trial._trial_id).system_attrs.get(_PROPOSAL_ATTR)
        if stored is not None:
            return dict(stored)
        space = self._space(study, {name: distribution})
        if space is None:
            # A parameter no trial has suggested yet: there is no record either (a record
            # needs every tuned parameter), so each starts on its own.
            assert isinstance(distribution, FloatDistribution)
            own = Hyperparameter(name, distribution.low, distribution.high, log=distribution.log)
            start = (self.start or {}).get(name)
            first = own.default() if start is None else float(start)
            return {name: own.from_internal(own.to_internal(first))}  # as the optimizer rounds it
        proposal = self._optimizer(study, space).ask()
        storage.set_trial_system_attr(trial._trial_id, _PROPOSAL_ATTR, proposal)
        return proposal

    def _space(
        self, study: Study, current: Mapping[str, BaseDistribution]
    ) -> list[Hyperparameter] | None:
        """The range of each tuned parameter suggested as a continuous float (the current
        trial's, else the latest trial's); ``None`` while some tuned parameter has never
        been suggested, or none is a continuous float."""
        found: dict[str, BaseDistribution] = dict(current)
        for tr in reversed(study.get_trials(deepcopy=False)):
            for name in self.params:
                if name not in found and name in tr.distributions:
                    found[name] = tr.distributions[name]
        if any(n not in found for n in self.params):
            return None
        space = [
            Hyperparameter(name, dist.low, dist.high, log=dist.log)
            for name in self.params
            if isinstance(dist := found[name], FloatDistribution) and _is_continuous(dist)
        ]
        return space or None

    def _optimizer(self, study: Study, space: list[Hyperparameter]) -> VectorMetaOptimizer:
        cls = VECTOR_META_OPTIMIZERS[self.meta_optimizer]
        optimizer = cls(space, start=self.start, **self.meta_optimizer_options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for record in self._records(study, [p.name for p in space]):
                optimizer.tell(record.values, record.value, record.gradients)
        return optimizer

    def _records(self, study: Study, names: Sequence[str]) -> list[VectorRecord]:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        out: list[VectorRecord] = []
        for tr in study.get_trials(deepcopy=False):
            if not all(n in tr.params for n in names):
                continue
            values = {n: float(tr.params[n]) for n in names}
            if tr.state == TrialState.FAIL and tr.system_attrs.get(_FAILED_ATTR, False):
                out.append(VectorRecord(values, math.inf, None))
                continue
            if tr.state != TrialState.COMPLETE or tr.value is None:
                continue
            value = sign * float(tr.value)
            if not math.isfinite(value):
                out.append(VectorRecord(values, math.inf, None))
                continue
            reported = tr.system_attrs.get(GRADIENT_ATTR)
            grads = _gradients(reported, names)
            if grads is not None:
                grads = {n: sign * g for n, g in grads.items()}
            out.append(VectorRecord(values, value, grads))
        if self.log_objective:
            out = log_objective_records(out)
        return out


def _gradients(reported: Any, names: Sequence[str]) -> dict[str, float] | None:
    """The reported derivative of every tuned parameter, or ``None`` if one is missing."""
    if not isinstance(reported, Mapping):
        return None
    out = {}
    for name in names:
        entry = reported.get(name)
        if entry is None or isinstance(entry, list):
            return None
        out[name] = float(entry)
        if not math.isfinite(out[name]):
            return None  # a finite value with a NaN or infinite gradient: value only
    return out


def _is_continuous(distribution: BaseDistribution) -> bool:
    """A float range without a quantum: what a gradient step can move."""
    return isinstance(distribution, FloatDistribution) and distribution.step is None


def hyperparameter_objective(
    task: HyperparameterTask,
    params: str | Sequence[str] | HyperparameterSpace,
    t: int,
    *,
    split: str = "train",
) -> Callable[[Trial], float]:
    """An Optuna objective for a library task that reports the hypergradient of every parameter.

    The vector form of :func:`~l2l_tune.integrations.optuna.task_objective`: each
    name is suggested as a float in the task's bounds (its
    :meth:`~l2l_tune.tasks.HyperparameterTask.hyperparameter_space`, or the space
    given), log-uniformly where the space is on a log scale; the objective returns the
    meta-loss after ``t`` inner steps and reports
    :meth:`~l2l_tune.tasks.HyperparameterTask.value_and_gradients`'s gradients with
    :func:`~l2l_tune.integrations.optuna.report_meta_gradient`, ready for
    :class:`HypergradientSampler` with the same names.

    Args:
        task: An :class:`~l2l_tune.tasks.MNISTBatch` (any inner optimizer), a
            :class:`~l2l_tune.tasks.Quadratic` (heavy-ball momentum) or any
            :class:`~l2l_tune.tasks.HyperparameterTask`.
        params: The names to tune, or a :class:`~l2l_tune.meta.HyperparameterSpace`.
        t: Inner steps.
        split: ``"train"`` (TbT) or ``"valid"`` (TbV).

    Raises:
        ValueError: for a name the task's space does not have, a bad ``split`` or ``t < 1``.
    """
    from l2l_tune.tasks.base import SPLITS

    check_choice(split, "split", SPLITS)
    t = check_horizon(t)
    if isinstance(params, HyperparameterSpace):
        space = params
    else:
        space = task.hyperparameter_space().subset(check_names(params))

    def objective(trial: Trial) -> float:
        values = {
            p.name: trial.suggest_float(p.name, p.low, p.high, log=p.log) for p in space.parameters
        }
        value, gradients = task.value_and_gradients(values, t, split=split, log=False)
        report_meta_gradient(trial, gradients)
        return value

    return objective
