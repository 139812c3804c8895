"""``MetaGradientSampler``: Optuna trials <-> the ask/tell meta-optimizers of l2l-tune.

The sampler keeps no state of its own. Every time a trial needs a step size it
reads the study's trials from storage, turns them into
:class:`~l2l_tune.meta.MetaRecord` s (step size, meta-objective, meta-gradient)
with :func:`l2l_tune.meta.driver.records_from_evaluations`, rebuilds the
meta-optimizer from them and asks it, avoiding the step sizes of trials still
running and of trials that failed, were pruned or gave no usable gradient
(``docs/trial_outcomes.md``). Workers sharing a storage, a study resumed after a
crash and ``n_jobs > 1`` therefore all see one state.

Per-trial bookkeeping lives in the trials' system attributes:

* ``l2l_tune:meta_gradient``: the reported derivative of the objective value with
  respect to the step size, or a mapping of derivatives by parameter name
  (:func:`report_meta_gradient`);
* ``l2l_tune:role`` and ``l2l_tune:pair``: for black-box objectives, which trial
  is the finite-difference partner of which probe;
* ``l2l_tune:eta``: the step size claimed by a trial, written as soon as it is
  proposed (before Optuna stores the parameter), so that workers sampling at
  the same moment see each other's claims.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from l2l_tune._validation import check_choice, check_positive, check_relative_step
from l2l_tune.meta import (
    META_OPTIMIZER_CHOICES,
    MetaOptimizer,
    MetaRecord,
    make_meta_optimizer,
    resolve_meta_optimizer,
)
from l2l_tune.meta.base import NonFiniteMetaGradientWarning
from l2l_tune.meta.driver import Evaluation, Proposal, propose, records_from_evaluations
from l2l_tune.tasks.base import is_exact_task

if TYPE_CHECKING:
    from optuna import Study
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, Trial

    from l2l_tune.tasks import MetaObjectiveTask

try:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.samplers import BaseSampler, RandomSampler
    from optuna.trial import TrialState
except ImportError as exc:  # pragma: no cover - exercised only without optuna
    raise ImportError(
        "l2l_tune.integrations.optuna needs Optuna: pip install 'l2l-tune[optuna]'"
    ) from exc

__all__ = [
    "GRADIENT_ATTR",
    "MetaGradientSampler",
    "report_meta_gradient",
    "task_objective",
]

#: System attribute holding a trial's reported meta-gradient.
GRADIENT_ATTR = "l2l_tune:meta_gradient"
_ROLE_ATTR = "l2l_tune:role"
_PAIR_ATTR = "l2l_tune:pair"
_STEP_ATTR = "l2l_tune:fd_step"
#: Set by :func:`task_objective` on trials of a task with an exact meta-objective.
_EXACT_ATTR = "l2l_tune:exact"
_ETA_ATTR = "l2l_tune:eta"
_SETTLED_ATTR = "l2l_tune:eta_settled"
_FAILED_ATTR = "l2l_tune:failed_run"


def report_meta_gradient(trial: Trial, grad: float | Mapping[str, float | Sequence[float]]) -> None:
    """Report the derivative of the value this trial will return in its hyperparameters.

    Call it from the objective, before returning the value. The derivative is of
    the *returned* value (not of its log: the sampler applies the chain rule when
    it works on the log of the objective).

    Args:
        trial: The running :class:`optuna.trial.Trial`.
        grad: ``d value / d step size``, or a mapping from parameter names to
            derivatives, as the drop-in optimizers' ``hypergradients()`` returns it
            (``{"lr": g1, "weight_decay": g2}``; a list for a per-group value). The
            sampler uses the entry of its step-size parameter; the others are
            stored with the trial. A non-finite derivative is stored, then skipped
            with a warning when the sampler reads it.

    Raises:
        ValueError: if ``trial`` is not a running Optuna trial, ``grad`` is not a
            number, or a mapping has a key that is not a string or an entry that is
            neither a number nor a sequence of numbers.
    """
    if not isinstance(trial, optuna.trial.Trial):
        raise ValueError(
            "trial must be the optuna.trial.Trial passed to the objective, "
            f"got {type(trial).__name__}"
        )
    stored: float | str | dict[str, Any]
    if isinstance(grad, Mapping):
        stored = {}
        for name, entry in grad.items():
            if not isinstance(name, str):
                raise ValueError(f"grad's keys must be parameter names (str), got {name!r}")
            if isinstance(entry, Sequence) and not isinstance(entry, str):
                stored[name] = [_stored_gradient(item, f"grad[{name!r}]") for item in entry]
            else:
                stored[name] = _stored_gradient(entry, f"grad[{name!r}]")
    else:
        stored = _stored_gradient(grad, "grad")
    trial.study._storage.set_trial_system_attr(trial._trial_id, GRADIENT_ATTR, stored)


def _stored_gradient(grad: Any, name: str) -> float | str:
    """A derivative as storage keeps it: a float, or the repr of a non-finite one."""
    if isinstance(grad, bool):
        raise ValueError(f"{name} must be a real number, got {grad!r}")
    try:
        value = float(grad)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {grad!r}") from None
    return value if math.isfinite(value) else repr(value)


def _step_size_gradient(grad: Any, name: str) -> float | None:
    """The stored derivative in the step size ``name`` (``None`` when there is none)."""
    if isinstance(grad, Mapping):
        grad = grad.get(name)
        if grad is None or isinstance(grad, list):
            return None
    return None if grad is None else float(grad)


def task_objective(
    task: MetaObjectiveTask,
    t: int,
    *,
    split: str = "train",
    param: str = "lr",
    low: float | None = None,
    high: float | None = None,
) -> Callable[[Trial], float]:
    """An Optuna objective for one of the library's tasks that reports its exact meta-gradient.

    The objective suggests ``param`` log-uniformly in ``[low, high]`` (default
    ``[1e-3/L, 10/L]`` from the task's ``step_size_scale()``), returns the task's
    meta-loss after ``t`` steps (the last loss, not its log: the sampler takes the
    log itself) and reports its derivative with :func:`report_meta_gradient`.

    Args:
        task: A :class:`~l2l_tune.tasks.Quadratic`, a
            :class:`~l2l_tune.tasks.LeastSquaresBatch` or any
            :class:`~l2l_tune.tasks.MetaObjectiveTask`.
        t: Inner GD steps.
        split: ``"train"`` (TbT) or ``"valid"`` (TbV).
        param: Name of the step-size parameter.
        low: Lower bound of the step size.
        high: Upper bound of the step size.

    Raises:
        ValueError: for bounds that are not ``0 < low < high``.
    """
    scale = task.step_size_scale()
    low_f = check_positive(low if low is not None else 1e-3 * scale, "low")
    high_f = check_positive(high if high is not None else 10.0 * scale, "high")
    if not low_f < high_f:
        raise ValueError(f"low must be < high, got low={low_f}, high={high_f}")

    exact = is_exact_task(task)

    def objective(trial: Trial) -> float:
        eta = trial.suggest_float(param, low_f, high_f, log=True)
        value, grad = task.value_and_gradient(eta, t, split=split, log=False)
        report_meta_gradient(trial, grad)
        if exact:
            trial.study._storage.set_trial_system_attr(trial._trial_id, _EXACT_ATTR, True)
        return value

    return objective


class _FromTrialsSampler(BaseSampler):
    """The plumbing of the samplers that rebuild their search from the trials.

    Every tuned parameter is answered in ``sample_independent`` (the relative
    search space is empty, so the first trial already starts where the search
    starts); other parameters go to ``_independent_sampler``; a FAIL trial whose
    objective raised or returned NaN is marked as a failed run, which a FAIL through
    the heartbeat (a killed worker, never evaluated) is not.
    """

    _independent_sampler: BaseSampler
    #: Parameters (and other keys) already warned about.
    _warned: set[str]

    def __init__(self, independent_sampler: BaseSampler | None, seed: int | None) -> None:
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)
        self._warned = set()

    def reseed_rng(self) -> None:
        """Reseed the independent sampler (called by Optuna for ``n_jobs > 1``)."""
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        """Empty: the tuned parameters are proposed in ``sample_independent``."""
        self._raise_error_if_multi_objective(study)
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """Sample each parameter of ``search_space`` as ``sample_independent`` would."""
        self._raise_error_if_multi_objective(study)
        return {
            name: self.sample_independent(study, trial, name, dist)
            for name, dist in search_space.items()
        }

    def _sample_elsewhere(
        self,
        study: Study,
        trial: FrozenTrial,
        name: str,
        distribution: BaseDistribution,
        why: str | None,
    ) -> Any:
        """The independent sampler's value; with ``why``, a warning once per parameter."""
        if why is not None and name not in self._warned:
            self._warned.add(name)
            warnings.warn(
                f"{why}; it is sampled by {type(self._independent_sampler).__name__}.",
                UserWarning,
                stacklevel=3,
            )
        return self._independent_sampler.sample_independent(study, trial, name, distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Forward to the independent sampler."""
        self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Mark a FAIL as a failed run; forward to the independent sampler.

        Optuna calls this in the worker when the objective raised or returned NaN,
        not when it fails a stale trial of a killed worker (heartbeat): only marked
        FAIL trials are failed runs, an unmarked one was never evaluated.
        """
        if state == TrialState.FAIL:
            study._storage.set_trial_system_attr(trial._trial_id, _FAILED_ATTR, True)
        self._independent_sampler.after_trial(study, trial, state, values)


class MetaGradientSampler(_FromTrialsSampler):
    """Tune a study's step-size parameter by meta-gradient descent (paper, Theorem 4).

    A drop-in sampler: ``optuna.create_study(sampler=MetaGradientSampler())`` on an
    unchanged objective. The step size is proposed by an l2l-tune meta-optimizer
    (default ``"bracket"``: a safeguarded secant on the meta-gradient's sign,
    Claim 1). Its meta-gradient comes from, in order:

    1. :func:`report_meta_gradient` called in the objective (exact, fastest);
    2. :func:`task_objective` for the library's own tasks (which calls 1);
    3. otherwise a finite difference from paired trials: after each *probe* at
       ``η·e^{−h/2}`` the next trial evaluates its *partner* ``η·e^{h/2}``
       (``h = fd_step``), and the pair counts as one record at ``η``. An objective that
       takes a seed from the trial should fix it per pair (common random numbers).

    With ``log_objective=True`` and positive values the sampler minimises
    ``log(value)`` (the paper's log meta-objective, up to the factor ``1/t``); for
    ``direction="maximize"`` it minimises ``−value`` (no log). Every other parameter
    goes to ``independent_sampler`` (default: :class:`optuna.samplers.RandomSampler`
    with ``seed``), with one warning per parameter.

    Every outcome of a trial is information (``docs/trial_outcomes.md``; the
    same policy as the Ray searcher's and the library's tuner):

    * a FAIL trial (the objective raised under ``catch=...`` or returned NaN) and a
      COMPLETE trial with an infinite value are failed runs, told as diverged
      ``(η, inf, None)`` ("too large" unless a larger step size ran fine); a trial
      that Optuna failed because its worker died (heartbeat) was never evaluated and
      tells nothing;
    * a PRUNED trial's last intermediate value is told as a partial value-only
      record (a PRUNED trial without intermediate value counts as failed);
    * a finite value with a NaN or infinite meta-gradient is told as a value-only
      record (the gradient is dropped, with a warning);
    * none of these step sizes is proposed again, so one failed, pruned or NaN
      trial never freezes the search.

    Proposals are clipped to the parameter's distribution bounds. Concurrent
    workers get distinct step sizes: those of RUNNING trials (and the step sizes
    other workers have just claimed) are avoided.

    Args:
        param: Name of the step-size parameter. ``None``: the study's only float
            parameter (a warning names the one used when there are several).
        meta_optimizer: ``"auto"`` (default): the bracketing search when the
            objective is exact and deterministic (``deterministic=True``, or every
            finished trial came from :func:`task_objective` on a closed-form task),
            else the model-based ``"model"``, which learns from values and
            gradients alike and needs no finite-difference pairs. Or a name:
            ``"bracket"``, ``"model"``, ``"paper"``, ``"adam"``.
        deterministic: Tell ``"auto"`` that the objective is exact and
            deterministic (``True``) or not (``False``); ``None`` decides from the
            trials as above.
        eta0: First step size; ``None``: the geometric mean of the bounds (log
            scale) or their midpoint.
        log_objective: Work on ``log(value)`` when all values are positive.
        independent_sampler: Sampler for the other parameters.
        seed: Seed of the default independent sampler.
        fd_step: Relative spacing ``h`` of finite-difference pairs, in ``(0, 1)``.
        meta_optimizer_options: Extra arguments of the meta-optimizer (``tol``, ``lr``, …).

    Raises:
        ValueError: for an unknown meta-optimizer, ``fd_step`` outside ``(0, 1)`` or
            ``eta0 ≤ 0``;
            at sampling time, for a multi-objective study or a step-size
            parameter that is not a float.
    """

    def __init__(
        self,
        param: str | None = None,
        *,
        meta_optimizer: str = "auto",
        deterministic: bool | None = None,
        eta0: float | None = None,
        log_objective: bool = True,
        independent_sampler: BaseSampler | None = None,
        seed: int | None = None,
        fd_step: float = 0.02,
        meta_optimizer_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_choice(meta_optimizer, "meta_optimizer", META_OPTIMIZER_CHOICES)
        if deterministic is not None and not isinstance(deterministic, bool):
            raise ValueError(f"deterministic must be None, True or False, got {deterministic!r}")
        self.param = param
        self.meta_optimizer = meta_optimizer
        self.deterministic = deterministic
        self.eta0 = None if eta0 is None else check_positive(eta0, "eta0")
        self.log_objective = bool(log_objective)
        self.fd_step = check_relative_step(fd_step)
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
        """The meta-optimizer's step size for the step-size parameter; the independent
        sampler's value for any other."""
        self._raise_error_if_multi_objective(study)
        if self._is_step_size(study, trial, param_name, param_distribution):
            assert isinstance(param_distribution, FloatDistribution)
            return self._sample_step_size(study, trial, param_name, param_distribution)
        return self._sample_elsewhere(
            study,
            trial,
            param_name,
            param_distribution,
            f"The parameter '{param_name}' is not the step size tuned by {type(self).__name__}",
        )

    # ------------------------------------------------------------------ which parameter
    def _is_step_size(
        self, study: Study, trial: FrozenTrial, name: str, distribution: BaseDistribution
    ) -> bool:
        if self.param is not None:
            if name != self.param:
                return False
            if not _is_step_size_distribution(distribution):
                raise ValueError(
                    f"param {name!r} must be suggested as a continuous float with "
                    "0 <= low < high < inf (trial.suggest_float without step), got "
                    f"{distribution!r}"
                )
            return True
        if not _is_step_size_distribution(distribution):
            return False
        chosen = self._infer_param(study, trial, name)
        return chosen == name

    def _infer_param(self, study: Study, trial: FrozenTrial, candidate: str) -> str:
        """The first continuous float parameter seen in the study (earliest trial first)."""
        floats: list[str] = []
        for frozen in study.get_trials(deepcopy=False):
            for pname, dist in frozen.distributions.items():
                if _is_step_size_distribution(dist) and pname not in floats:
                    floats.append(pname)
        if candidate not in floats:
            floats.append(candidate)
        if len(floats) > 1 and "__ambiguous__" not in self._warned:
            self._warned.add("__ambiguous__")
            warnings.warn(
                f"{type(self).__name__}(param=None) found several float parameters "
                f"{floats}; tuning {floats[0]!r} as the step size. Pass param=... to choose.",
                UserWarning,
                stacklevel=3,
            )
        return floats[0]

    # ------------------------------------------------------------------ the state, from storage
    def _evaluations(self, study: Study, name: str) -> list[Evaluation]:
        """The study's trials that have (or have claimed) the step size, as engine evaluations."""
        evaluations = []
        for tr in study.get_trials(deepcopy=False):
            evaluation = _evaluation(tr, name)
            if evaluation is None:
                continue
            reported = tr.system_attrs.get(GRADIENT_ATTR)
            if isinstance(reported, Mapping) and evaluation.grad is None:
                self._warn_once(
                    f"no-step-size-gradient-{tr.number}",
                    f"trial {tr.number} reported meta-gradients for {sorted(reported)} but no "
                    f"number for the step size {name!r}: its value is used without gradient",
                )
            evaluations.append(evaluation)
        return evaluations

    def _records(self, study: Study, evaluations: list[Evaluation]) -> list[MetaRecord]:
        def skip(evaluation: Evaluation, reason: str) -> None:
            if evaluation.value is None:
                return  # a FAIL or a PRUNED trial without value: Optuna has logged it
            self._warn_once(f"skip-{evaluation.key}", f"trial {evaluation.key}: {reason}")

        return records_from_evaluations(
            evaluations,
            log_objective=self.log_objective,
            maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE,
            on_skip=skip,
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, NonFiniteMetaGradientWarning, stacklevel=4)

    def _meta_optimizer_name(self, study: Study) -> str:
        """The registry name ``meta_optimizer`` stands for in ``study`` (resolves ``"auto"``)."""
        if self.meta_optimizer != "auto":
            return self.meta_optimizer
        exact = self.deterministic
        if exact is None:
            finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            exact = bool(finished) and all(tr.system_attrs.get(_EXACT_ATTR) for tr in finished)
        return resolve_meta_optimizer("auto", exact=exact)

    def _optimizer(
        self, records: list[MetaRecord], dist: FloatDistribution, name: str
    ) -> MetaOptimizer:
        if self.eta0 is not None:
            eta0 = self.eta0
        elif dist.log:
            eta0 = math.sqrt(dist.low * dist.high)
        else:
            eta0 = 0.5 * (dist.low + dist.high) if dist.low > 0 else 0.1 * dist.high
        options = dict(self.meta_optimizer_options)
        options["bounds"] = (max(dist.low, 0.0), dist.high)
        optimizer = make_meta_optimizer(name, eta0=eta0, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for record in records:
                optimizer.tell(record.eta, record.value, record.grad, partial=record.partial)
        return optimizer

    def recommended_step_size(self, study: Study, param: str | None = None) -> float:
        """The step size to train with after the study: the meta-optimizer's recommendation.

        For the model-based search this is the minimiser of the posterior mean of the
        objective, which averages the noise of every trial; ``study.best_params`` is
        the luckiest noisy trial, which on a noisy objective (fresh seeds per trial)
        is biased towards whichever step size drew a good seed. For the bracket on an
        exact objective the two agree up to the bracket's tolerance.

        Raises:
            ValueError: if the step-size parameter is unknown or not a float in ``study``.
        """
        return float(self.meta_optimizer_for(study, param).estimate())

    def meta_optimizer_for(self, study: Study, param: str | None = None) -> MetaOptimizer:
        """The meta-optimizer rebuilt from ``study``'s trials (for inspection).

        Its :meth:`~l2l_tune.meta.MetaOptimizer.estimate` is the current best
        estimate of the optimal step size.

        Raises:
            ValueError: if the step-size parameter is unknown or not a float in ``study``.
        """
        name = param or self.param
        dist = None
        for tr in study.get_trials(deepcopy=False):
            for pname, pdist in tr.distributions.items():
                if name is None and _is_step_size_distribution(pdist):
                    name = pname
                if pname == name:
                    dist = pdist
        if name is None or not isinstance(dist, FloatDistribution):
            raise ValueError(f"param {name!r} is not a float parameter of the study")
        records = self._records(study, self._evaluations(study, name))
        return self._optimizer(records, dist, self._meta_optimizer_name(study))

    def _sample_step_size(
        self, study: Study, trial: FrozenTrial, name: str, dist: FloatDistribution
    ) -> float:
        """Propose, claim, re-read, and step aside on a conflict.

        Two workers that sample at the same moment may compute from different
        states (a trial finished in between) and propose the same step size or
        the same finite-difference partner. Each one writes its claim
        (``l2l_tune:eta``, role, pair) first, then re-reads the RUNNING trials
        (write-then-read: of two conflicting claims, at least one worker sees
        the other's). On a conflict with a lower-numbered trial, or with one
        that has already settled (stored the parameter, or the
        ``l2l_tune:eta_settled`` mark written after a clean check), it proposes
        again with that claim included. On a conflict with a higher-numbered
        trial still checking, it waits (at most about 1 s) for that trial to
        move or to settle. The settled mark is written last.
        """
        storage = study._storage
        proposal, known = self._propose(study, trial, name, dist)
        for _ in range(8):
            _claim(storage, trial._trial_id, proposal)
            if not self._must_move(study, trial, name, proposal, known):
                break
            proposal, known = self._propose(study, trial, name, dist)
        storage.set_trial_system_attr(trial._trial_id, _SETTLED_ATTR, float(proposal.eta))
        return float(proposal.eta)

    def _must_move(
        self,
        study: Study,
        trial: FrozenTrial,
        name: str,
        proposal: Proposal,
        known: set[int],
    ) -> bool:
        """Whether another trial holds the same claim and keeps it (see
        :meth:`_sample_step_size`); ``known``: the finished trials the proposal was
        computed from (one that finished since, with the same claim, also counts)."""
        deadline = time.monotonic() + 1.0
        while True:
            conflicts = [
                tr
                for tr in study.get_trials(deepcopy=False)
                if tr.number != trial.number
                and tr.state != TrialState.WAITING
                and tr.number not in known
                and _conflicts(tr, name, proposal)
            ]
            if not conflicts:
                return False
            if any(
                tr.state != TrialState.RUNNING or tr.number < trial.number or _settled(tr, name)
                for tr in conflicts
            ):
                return True
            if time.monotonic() > deadline:
                return True
            time.sleep(0.005)

    def _propose(
        self, study: Study, trial: FrozenTrial, name: str, dist: FloatDistribution
    ) -> tuple[Proposal, set[int]]:
        """The proposal for ``trial``, and the numbers of the finished trials it used."""
        evaluations = self._evaluations(study, name)
        known = {int(e.key) for e in evaluations if not e.running}  # type: ignore[call-overload]
        optimizer = self._optimizer(
            self._records(study, evaluations), dist, self._meta_optimizer_name(study)
        )
        # Earlier trials still sampling (RUNNING, neither step size nor claim stored yet)
        # will take the next proposals: leave those to them (trial-number order).
        claims_ahead = [
            tr.number
            for tr in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if tr.number < trial.number
            and name not in tr.params
            and _ETA_ATTR not in tr.system_attrs
        ]
        proposal = propose(
            optimizer,
            evaluations,
            fd_step=self.fd_step,
            bounds=(dist.low, dist.high),
            exclude=trial.number,
            claims_ahead=claims_ahead,
        )
        return proposal, known


def _evaluation(tr: FrozenTrial, name: str) -> Evaluation | None:
    """One trial as an engine evaluation (``None`` if it has neither the step size nor a claim).

    COMPLETE: its value; FAIL: no value (failed) if this sampler marked it in
    :meth:`MetaGradientSampler.after_trial`, else ``None`` (a stale trial of a killed
    worker); PRUNED: its last intermediate value, flagged as pruned; RUNNING:
    running, at its step size or its claim.
    """
    attrs = tr.system_attrs
    if name in tr.params:
        eta = float(tr.params[name])
    elif tr.state == TrialState.RUNNING and attrs.get(_ETA_ATTR) is not None:
        eta = float(attrs[_ETA_ATTR])
    else:
        return None
    if tr.state not in (
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.RUNNING,
    ):
        return None
    if tr.state == TrialState.FAIL and not attrs.get(_FAILED_ATTR, False):
        return None  # a killed worker's trial, failed by the heartbeat: never evaluated
    value: float | None = None
    if tr.state == TrialState.COMPLETE and tr.value is not None:
        value = float(tr.value)
    elif tr.state == TrialState.PRUNED and tr.intermediate_values:
        value = float(tr.intermediate_values[max(tr.intermediate_values)])
    grad = _step_size_gradient(attrs.get(GRADIENT_ATTR), name)
    pair = attrs.get(_PAIR_ATTR)
    h = attrs.get(_STEP_ATTR)
    return Evaluation(
        key=tr.number,
        eta=eta,
        value=value,
        grad=grad,
        running=tr.state == TrialState.RUNNING,
        role=attrs.get(_ROLE_ATTR),
        pair=None if pair is None else int(pair),
        fd_step=None if h is None else float(h),
        pruned=tr.state == TrialState.PRUNED,
        tentative=tr.state == TrialState.RUNNING and not _settled(tr, name),
    )


def _claim(storage: Any, trial_id: int, proposal: Proposal) -> None:
    """Store the proposal in the trial's system attributes (before Optuna stores the value)."""
    storage.set_trial_system_attr(trial_id, _ROLE_ATTR, proposal.role)
    storage.set_trial_system_attr(
        trial_id, _STEP_ATTR, None if proposal.fd_step is None else float(proposal.fd_step)
    )
    storage.set_trial_system_attr(
        trial_id,
        _PAIR_ATTR,
        None if proposal.pair is None else int(proposal.pair),  # type: ignore[call-overload]
    )
    storage.set_trial_system_attr(trial_id, _ETA_ATTR, float(proposal.eta))


def _settled(tr: FrozenTrial, name: str) -> bool:
    """Whether a trial's step size is final (stored, or marked settled for its claim)."""
    if name in tr.params:
        return True
    settled = tr.system_attrs.get(_SETTLED_ATTR)
    return settled is not None and settled == tr.system_attrs.get(_ETA_ATTR)


def _conflicts(tr: FrozenTrial, name: str, proposal: Proposal) -> bool:
    """Whether a trial holds the proposed step size or partners the same probe."""
    attrs = tr.system_attrs
    if proposal.role == "partner" and attrs.get(_ROLE_ATTR) == "partner":
        pair = attrs.get(_PAIR_ATTR)
        if pair is not None and int(pair) == proposal.pair:
            return True
    held = tr.params.get(name, attrs.get(_ETA_ATTR) if tr.state == TrialState.RUNNING else None)
    if held is None:
        return False
    held = float(held)
    return abs(proposal.eta - held) <= 1e-12 * max(abs(held), 1e-300)


def _is_step_size_distribution(distribution: BaseDistribution) -> bool:
    """A continuous float range that a step size can take: ``0 ≤ low < high < ∞``."""
    return (
        isinstance(distribution, FloatDistribution)
        and distribution.step is None
        and distribution.low >= 0.0
        and distribution.high > 0.0
        and math.isfinite(distribution.high)
    )
