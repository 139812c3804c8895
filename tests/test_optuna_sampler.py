"""Behaviour of the Optuna integration: ``MetaGradientSampler`` in real studies.

The reference problem is the paper's Fig-1 quadratic as in the authors' code
(``Quadratic.random(20, 0, variant="authors")``, ``t = 80``), whose optimal step size
``η* ≈ 0.0309`` is known to ~1e-15 from :meth:`Quadratic.optimal_step_size`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import optuna
import pytest
from l2l_tune.integrations.optuna import (
    GRADIENT_ATTR,
    MetaGradientSampler,
    report_meta_gradient,
    task_objective,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from l2l_tune import GridSearch, LeastSquares, Quadratic
from l2l_tune.meta import BracketingMetaOptimizer, MetaRecord, NonFiniteMetaGradientWarning

T = 80
LOW, HIGH = 1e-4, 1.0
Objective = Callable[[Trial], float]
#: The first trial is at ``eta0`` up to half the default finite-difference spacing
#: (``fd_step = 0.02``): before any gradient is reported the sampler cannot tell a
#: gradient objective from a black-box one and may centre a probe pair on ``eta0``.
FIRST_RTOL = 0.011

_INDEPENDENT = "ignore:The parameter .* is not the step size:UserWarning"


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def quad() -> Quadratic:
    """The Fig-1 quadratic (authors' variant): ``L ≈ 63``, ``η* ≈ 0.0309`` at ``t = 80``."""
    return Quadratic.random(20, 0, variant="authors")


@pytest.fixture(scope="module")
def eta_star(quad: Quadratic) -> float:
    """The exact optimal step size of :func:`quad` at ``t = 80``."""
    return quad.optimal_step_size(T)


def rel(a: float, b: float) -> float:
    """Relative distance of ``a`` to ``b``."""
    return abs(a - b) / abs(b)


def lrs(study: optuna.Study, name: str = "lr") -> list[float]:
    """The step sizes of the study's trials, in trial order (trials without it skipped)."""
    return [tr.params[name] for tr in study.trials if name in tr.params]


def estimate(study: optuna.Study, sampler: MetaGradientSampler | None = None) -> float:
    """The sampler's current estimate of ``η*`` rebuilt from the study."""
    s = sampler if sampler is not None else study.sampler
    assert isinstance(s, MetaGradientSampler)
    return s.meta_optimizer_for(study, "lr").estimate()


def gradient_objective(
    q: Quadratic,
    *,
    low: float = LOW,
    high: float = HIGH,
    log: bool = True,
    maximize: bool = False,
) -> Objective:
    """Suggest ``lr``, return ``f(w_t)`` (or ``−f`` to maximise) and report its exact derivative."""
    sign = -1.0 if maximize else 1.0

    def objective(trial: Trial) -> float:
        lr = trial.suggest_float("lr", low, high, log=log)
        value, grad = q.value_and_gradient(lr, T, log=False)
        report_meta_gradient(trial, sign * grad)
        return sign * value

    return objective


def black_box_objective(q: Quadratic) -> Objective:
    """The user's unchanged objective: suggest ``lr``, return the last loss, nothing else."""

    def objective(trial: Trial) -> float:
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        return q.meta_objective(lr, T, log=False)

    return objective


# ---------------------------------------------------------------------- 2. one-line swap
def test_black_box_one_line_swap_finds_eta_star(quad: Quadratic, eta_star: float) -> None:
    """Swapping only the sampler on an unchanged black-box objective (no gradient reported,
    ``param=None``) puts the best trial's ``lr`` within 1% of ``η*`` after 60 trials."""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True))
    study.optimize(black_box_objective(quad), n_trials=60)
    assert len(study.trials) == 60
    assert all(tr.state == TrialState.COMPLETE for tr in study.trials)
    assert rel(study.best_params["lr"], eta_star) < 1e-2


def test_exact_gradients_reach_1e_minus_6_within_30_trials(
    quad: Quadratic, eta_star: float
) -> None:
    """The issue's target: with :func:`task_objective` (exact meta-gradients) and
    ``MetaGradientSampler(param="lr", eta0=0.1)``, a trial within 1e-6 relative of ``η*``
    is reached in at most 30 trials, and the best trial and the estimate are that close."""
    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    study.optimize(task_objective(quad, T, param="lr", low=LOW, high=HIGH), n_trials=30)
    assert study.trials[0].params["lr"] == pytest.approx(0.1, rel=FIRST_RTOL)
    hits = [i for i, lr in enumerate(lrs(study)) if rel(lr, eta_star) <= 1e-6]
    assert hits and hits[0] < 30
    assert rel(study.best_params["lr"], eta_star) <= 1e-6
    assert rel(estimate(study), eta_star) <= 1e-6
    # The gradient really went through storage (the exact path, not finite differences).
    assert all(GRADIENT_ATTR in tr.system_attrs for tr in study.trials)


def test_least_squares_train_by_validation_reaches_grid_optimum() -> None:
    """On least squares with ``split="valid"`` (TbV, Eqn 4) the sampler reaches the optimum
    of a fine grid search on the same meta-objective to 1e-3 relative (the grid's own
    resolution is ~5e-4), with a meta-objective no worse than the grid's."""
    batch = LeastSquares(50, 1.0).sample(20, 25, 25, seed=0)
    coarse = GridSearch(low=1e-4, high=1.0, n_points=41).fit(batch, T, split="valid", log=False)
    assert coarse.step_size_ is not None
    fine = GridSearch(low=coarse.step_size_ / 1.5, high=coarse.step_size_ * 1.5, n_points=801).fit(
        batch, T, split="valid", log=False
    )
    grid_eta, grid_value = fine.step_size_, fine.meta_objective_
    assert grid_eta is not None and grid_value is not None

    sampler = MetaGradientSampler(deterministic=True, param="lr")
    study = optuna.create_study(sampler=sampler)
    study.optimize(task_objective(batch, T, split="valid", param="lr"), n_trials=30)
    eta = estimate(study)
    assert rel(eta, grid_eta) < 1e-3
    assert rel(study.best_params["lr"], grid_eta) < 1e-3
    assert study.best_value <= grid_value * (1 + 1e-12)
    assert batch.meta_objective(eta, T, split="valid") <= grid_value * (1 + 1e-12)


# ---------------------------------------------------------------------- 3. variants
def test_maximize_converges_to_the_same_eta(quad: Quadratic, eta_star: float) -> None:
    """``direction="maximize"`` with the objective returning ``−f`` and reporting ``−f'``
    converges to the same ``η*`` (to 1e-6) in 30 trials."""
    study = optuna.create_study(
        direction="maximize", sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    study.optimize(gradient_objective(quad, maximize=True), n_trials=30)
    assert study.best_value < 0
    assert rel(study.best_params["lr"], eta_star) <= 1e-6
    assert rel(estimate(study), eta_star) <= 1e-6


def test_log_objective_false_converges(quad: Quadratic, eta_star: float) -> None:
    """``log_objective=False`` (meta-gradient descent on ``f`` itself, whose gradients span
    ~150 orders of magnitude here) still converges to ``η*`` to 1e-6 in 30 trials."""
    sampler = MetaGradientSampler(deterministic=True, param="lr", eta0=0.1, log_objective=False)
    study = optuna.create_study(sampler=sampler)
    study.optimize(gradient_objective(quad), n_trials=30)
    assert rel(study.best_params["lr"], eta_star) <= 1e-6
    assert rel(estimate(study), eta_star) <= 1e-6


@pytest.mark.parametrize(("low", "high"), [(0.0, 0.05), (0.001, 0.5)])
def test_linear_scale_distribution(
    quad: Quadratic, eta_star: float, low: float, high: float
) -> None:
    """A linear-scale ``suggest_float("lr", low, high)`` (including ``low = 0``) works: all
    proposals lie in the bounds and the search converges to ``η*`` (1e-6) in 40 trials."""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, param="lr"))
    study.optimize(gradient_objective(quad, low=low, high=high, log=False), n_trials=40)
    assert all(low <= lr <= high for lr in lrs(study))
    assert rel(estimate(study), eta_star) <= 1e-6


@pytest.mark.parametrize(("low", "high", "bound"), [(1e-4, 0.02, "high"), (0.04, 1.0, "low")])
def test_bounds_excluding_eta_star_converge_to_the_bound(
    quad: Quadratic, eta_star: float, low: float, high: float, bound: str
) -> None:
    """When the search space excludes ``η*``, the sampler converges to the nearer bound: the
    best trial, the estimate and the last proposals sit exactly on it and the
    meta-optimizer reports convergence."""
    assert not low <= eta_star <= high
    target = high if bound == "high" else low
    sampler = MetaGradientSampler(deterministic=True, param="lr")
    study = optuna.create_study(sampler=sampler)
    study.optimize(gradient_objective(quad, low=low, high=high), n_trials=15)
    assert all(low <= lr <= high for lr in lrs(study))
    assert study.best_params["lr"] == target
    assert lrs(study)[-3:] == [target] * 3
    optimizer = sampler.meta_optimizer_for(study)
    assert optimizer.estimate() == target
    assert optimizer.converged


# ---------------------------------------------------------------------- 4. robustness
@pytest.mark.parametrize("kind", ["gradient", "black_box"])
def test_failing_trials_do_not_break_the_search(
    quad: Quadratic, eta_star: float, kind: str
) -> None:
    """Objectives that raise on every third trial (FAIL, caught by ``catch``) do not break
    sampling: the failed trials are told as failed runs ``(η, inf, None)``, which the
    bracketing optimizer ignores as faults where a larger step size ran fine, and the search
    converges (1e-6 with gradients; 1% for the black-box search)."""
    base = gradient_objective(quad) if kind == "gradient" else black_box_objective(quad)

    def objective(trial: Trial) -> float:
        value = base(trial)
        if trial.number % 3 == 1:
            raise RuntimeError("simulated crash of the training run")
        return value

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    n = 45 if kind == "gradient" else 90
    study.optimize(objective, n_trials=n, catch=(RuntimeError,))
    states = [tr.state for tr in study.trials]
    assert states.count(TrialState.FAIL) == n // 3
    assert states.count(TrialState.COMPLETE) == n - n // 3
    if kind == "gradient":
        assert rel(estimate(study), eta_star) <= 1e-6
    else:
        assert rel(study.best_params["lr"], eta_star) < 1e-2


@pytest.mark.parametrize("kind", ["gradient", "black_box"])
def test_pruned_trials_do_not_break_the_search(quad: Quadratic, eta_star: float, kind: str) -> None:
    """Trials pruned after reporting an intermediate value (``raise optuna.TrialPruned``)
    are told as partial value-only records; the search still converges."""
    base = gradient_objective(quad) if kind == "gradient" else black_box_objective(quad)

    def objective(trial: Trial) -> float:
        value = base(trial)
        if trial.number % 3 == 1:
            trial.report(value, step=0)
            raise optuna.TrialPruned()
        return value

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    n = 45 if kind == "gradient" else 90
    study.optimize(objective, n_trials=n)
    assert [tr.state for tr in study.trials].count(TrialState.PRUNED) == n // 3
    if kind == "gradient":
        assert rel(estimate(study), eta_star) <= 1e-6
    else:
        assert rel(study.best_params["lr"], eta_star) < 1e-2


def test_nan_value_is_a_failed_run_and_never_proposed_again(
    quad: Quadratic, eta_star: float
) -> None:
    """Optuna 5 records a trial whose objective returns NaN as FAIL (value ``None``). The
    sampler tells it as a failed run ``(η, inf, None)`` without a warning of its own
    (Optuna has logged it), never proposes that step size again (the next trial moves),
    and the search converges."""
    base = gradient_objective(quad)

    def objective(trial: Trial) -> float:
        value = base(trial)
        return math.nan if trial.number == 2 else value

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteMetaGradientWarning)
        study.optimize(objective, n_trials=30)
    assert study.trials[2].state == TrialState.FAIL
    assert study.trials[2].value is None
    failed = study.trials[2].params["lr"]
    assert all(tr.params["lr"] != failed for tr in study.trials[3:])
    history = study.sampler.meta_optimizer_for(study).history
    assert MetaRecord(failed, math.inf, None) in history
    assert rel(estimate(study), eta_star) <= 1e-6


def test_infinite_value_warns_and_counts_as_diverged(quad: Quadratic, eta_star: float) -> None:
    """An objective returning ``inf`` is COMPLETE for Optuna; the sampler warns
    (:class:`NonFiniteMetaGradientWarning`, naming the trial) and tells it as a diverged run
    ``(η, inf, None)`` (never a NaN in its state). Since a larger step size ran fine, the
    bracketing optimizer ignores it as a fault, and the study converges anyway."""
    base = gradient_objective(quad)

    def objective(trial: Trial) -> float:
        value = base(trial)
        return math.inf if trial.number == 2 else value

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    with pytest.warns(NonFiniteMetaGradientWarning, match="trial 2"):
        study.optimize(objective, n_trials=30)
    assert study.trials[2].state == TrialState.COMPLETE
    assert study.trials[2].value == math.inf
    history = study.sampler.meta_optimizer_for(study).history
    assert any(r.value == math.inf and r.grad is None for r in history)
    assert not any(math.isnan(r.value) for r in history)
    assert rel(estimate(study), eta_star) <= 1e-6


def test_nan_gradient_keeps_the_value_and_study_converges(quad: Quadratic, eta_star: float) -> None:
    """A NaN meta-gradient reported with :func:`report_meta_gradient` is stored, then dropped
    with a :class:`NonFiniteMetaGradientWarning`; the value is kept as a value-only record,
    the step size is not proposed again, and the study converges to ``η*``."""

    def objective(trial: Trial) -> float:
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        value, grad = quad.value_and_gradient(lr, T, log=False)
        report_meta_gradient(trial, math.nan if trial.number == 2 else grad)
        return value

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    with pytest.warns(NonFiniteMetaGradientWarning, match="trial 2"):
        study.optimize(objective, n_trials=30)
    assert math.isnan(float(study.trials[2].system_attrs[GRADIENT_ATTR]))
    lr2 = study.trials[2].params["lr"]
    assert study.trials[3].params["lr"] != lr2
    history = study.sampler.meta_optimizer_for(study).history
    assert MetaRecord(lr2, math.log(study.trials[2].value), None) in history
    assert rel(estimate(study), eta_star) <= 1e-6


def test_enqueued_trial_is_used(quad: Quadratic, eta_star: float) -> None:
    """``study.enqueue_trial({"lr": 0.05})`` runs first at 0.05; its reported gradient
    (positive: 0.05 > η*) enters the state, so the next proposal goes below 0.05 instead
    of starting at ``eta0 = 0.1``; the search converges."""
    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    study.enqueue_trial({"lr": 0.05})
    study.optimize(task_objective(quad, T, low=LOW, high=HIGH), n_trials=30)
    values = lrs(study)
    assert values[0] == 0.05
    assert all(lr < 0.05 for lr in values[1:])
    assert rel(estimate(study), eta_star) <= 1e-6


def test_enqueued_trial_in_black_box_study(quad: Quadratic, eta_star: float) -> None:
    """In a black-box study an enqueued trial (no gradient, no finite-difference role) is
    simply not a record: sampling proceeds from ``eta0`` and still finds ``η*`` to 1%."""
    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    study.enqueue_trial({"lr": 0.05})
    study.optimize(black_box_objective(quad), n_trials=61)
    values = lrs(study)
    assert values[0] == 0.05
    assert values[1] == pytest.approx(0.1, rel=FIRST_RTOL)
    assert all(tr.state == TrialState.COMPLETE for tr in study.trials)
    assert rel(study.best_params["lr"], eta_star) < 1e-2


def next_step_size(study: optuna.Study) -> float:
    """The step size the study's sampler proposes next, asked in a throwaway copy of the
    study (``study`` itself is left as it was)."""
    copy = optuna.create_study(sampler=study.sampler)
    copy.add_trials(study.trials)
    trial = copy.ask()
    return trial.suggest_float("lr", LOW, HIGH, log=True)


def test_add_trials_from_an_earlier_study_warm_start_with_gradients(
    quad: Quadratic, eta_star: float
) -> None:
    """``new.add_trials(earlier.trials)``: the earlier study's trials (with their stored
    meta-gradients) are records of a fresh sampler in a new study; its first proposal is
    exactly the one the earlier study would make next, and 15 more trials reach 1e-6."""
    earlier = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    earlier.optimize(gradient_objective(quad), n_trials=15)
    expected = next_step_size(earlier)
    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    study.add_trials(earlier.trials)
    study.optimize(gradient_objective(quad), n_trials=15)
    values = lrs(study)
    assert values[15] == pytest.approx(expected, rel=1e-12)
    assert rel(estimate(study), eta_star) <= 1e-6


def test_add_trial_made_with_create_trial_is_a_gradient_record(
    quad: Quadratic, eta_star: float
) -> None:
    """Results measured elsewhere, added with ``optuna.trial.create_trial`` (the gradient in
    ``system_attrs[GRADIENT_ATTR]``), are records: two of them on either side of ``η*``
    start the search inside their bracket; one without a gradient is a value-only record
    the model-based search uses; a FAIL trial added so is not a record (never evaluated)."""
    dist = optuna.distributions.FloatDistribution(LOW, HIGH, log=True)
    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", meta_optimizer="bracket")
    )
    for lr in (0.01, 0.05):
        value, grad = quad.value_and_gradient(lr, T, log=False)
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr},
                distributions={"lr": dist},
                value=value,
                system_attrs={GRADIENT_ATTR: grad},
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.9}, distributions={"lr": dist}, state=TrialState.FAIL
        )
    )
    first = next_step_size(study)
    assert 0.01 < first < 0.05
    study.optimize(gradient_objective(quad), n_trials=20)
    assert rel(estimate(study), eta_star) <= 1e-6
    values_only = optuna.create_study(
        sampler=MetaGradientSampler(param="lr", meta_optimizer="model", seed=0)
    )
    for lr in (0.003, 0.01, 0.03, 0.1):
        values_only.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr},
                distributions={"lr": dist},
                value=quad.meta_objective(lr, T, log=False),
            )
        )
    sampler = values_only.sampler
    assert isinstance(sampler, MetaGradientSampler)
    assert len(sampler.meta_optimizer_for(values_only, "lr").history) == 4


def test_parameter_present_only_in_some_trials(quad: Quadratic, eta_star: float) -> None:
    """A step size suggested only in some trials (a conditional search space) is tuned from
    the trials that have it; the others (sampled independently, with one UserWarning) do
    not disturb the search, which converges to ``η*``."""
    base = gradient_objective(quad)

    def objective(trial: Trial) -> float:
        if trial.suggest_categorical("optimizer", ["gd", "none"]) == "gd":
            return base(trial)
        return 10.0

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1, seed=0)
    )
    with pytest.warns(UserWarning, match="'optimizer'"):
        study.optimize(objective, n_trials=70)
    with_lr = [tr for tr in study.trials if "lr" in tr.params]
    assert 25 <= len(with_lr) < 70
    assert rel(estimate(study), eta_star) <= 1e-6


def test_param_none_picks_the_single_float(quad: Quadratic, eta_star: float) -> None:
    """``param=None`` with a single float parameter tunes it, silently (no UserWarning),
    starting at the geometric mean of the log bounds."""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        study.optimize(gradient_objective(quad), n_trials=30)
    assert study.trials[0].params["lr"] == pytest.approx(math.sqrt(LOW * HIGH), rel=FIRST_RTOL)
    assert rel(estimate(study), eta_star) <= 1e-6


def test_param_none_with_two_floats_warns_naming_the_one_used(
    quad: Quadratic, eta_star: float
) -> None:
    """``param=None`` with two float parameters warns, naming the one tuned (the first
    seen: ``lr``); the other is sampled independently and ``lr`` converges."""
    base = gradient_objective(quad)

    def objective(trial: Trial) -> float:
        value = base(trial)
        trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        return value

    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, seed=0))
    with pytest.warns(UserWarning) as record:
        study.optimize(objective, n_trials=30)
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert any("several float parameters" in m and "tuning 'lr'" in m for m in messages)
    assert rel(estimate(study), eta_star) <= 1e-6


@pytest.mark.parametrize(
    "suggest",
    [
        pytest.param(lambda t: t.suggest_int("lr", 1, 10), id="int"),
        pytest.param(lambda t: t.suggest_float("lr", 0.0, 1.0, step=0.1), id="stepped-float"),
        pytest.param(lambda t: t.suggest_categorical("lr", [0.1, 0.01]), id="categorical"),
    ],
)
def test_step_size_that_is_not_a_continuous_float_raises(
    suggest: Callable[[Trial], float],
) -> None:
    """``param="lr"`` suggested as an int (or a stepped float, or a categorical) raises a
    ValueError naming the parameter; the trial is recorded as FAIL."""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, param="lr"))
    with pytest.raises(ValueError, match="'lr'"):
        study.optimize(lambda t: float(suggest(t)), n_trials=1)
    assert study.trials[0].state == TrialState.FAIL


@pytest.mark.parametrize(("low", "high"), [(-1.0, 0.0), (-1.0, -0.5), (-1.0, 1.0)])
def test_param_none_leaves_floats_with_negative_range_to_the_independent_sampler(
    low: float, high: float
) -> None:
    """With ``param=None`` a float whose range includes negative values cannot be a step
    size: it is sampled by the independent sampler (with its UserWarning), within bounds.
    (An earlier version tuned ``[-1, 0]`` as the step size and crashed with
    "eta0 must be a finite number > 0", failing Optuna's ``test_float``.)"""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, seed=0))
    with pytest.warns(UserWarning, match="'x' is not the step size"):
        study.optimize(lambda t: t.suggest_float("x", low, high), n_trials=10)
    assert all(low <= tr.params["x"] <= high for tr in study.trials)
    assert len({tr.params["x"] for tr in study.trials}) == 10


def test_explicit_param_with_negative_range_raises() -> None:
    """``param="lr"`` suggested over a range with negative values raises a ValueError that
    names the parameter."""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, param="lr"))
    with pytest.raises(ValueError, match="'lr'"):
        study.optimize(lambda t: t.suggest_float("lr", -1.0, 1.0), n_trials=1)


def test_multi_objective_study_raises(quad: Quadratic) -> None:
    """A multi-objective study is rejected with a ValueError."""
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=MetaGradientSampler(deterministic=True, param="lr"),
    )

    def objective(trial: Trial) -> tuple[float, float]:
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        return quad.meta_objective(lr, T), lr

    with pytest.raises(ValueError):
        study.optimize(objective, n_trials=1)


@pytest.mark.parametrize("not_a_trial", [None, 0.1, "trial", object()])
def test_report_meta_gradient_rejects_non_trials(not_a_trial: object) -> None:
    """:func:`report_meta_gradient` with something that is not an Optuna trial raises
    ValueError."""
    with pytest.raises(ValueError, match="optuna.trial.Trial"):
        report_meta_gradient(cast(Any, not_a_trial), 1.0)


def test_report_meta_gradient_rejects_frozen_trials_and_bad_gradients() -> None:
    """A FrozenTrial (from ``study.trials``) is not a running trial; a gradient that is not
    a number is rejected; both with ValueError."""
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, param="lr"))
    study.optimize(lambda t: t.suggest_float("lr", LOW, HIGH, log=True), n_trials=1)
    frozen: FrozenTrial = study.trials[0]
    with pytest.raises(ValueError):
        report_meta_gradient(cast(Any, frozen), 1.0)
    trial = study.ask()
    with pytest.raises(ValueError, match="real number"):
        report_meta_gradient(trial, cast(Any, "steep"))
    with pytest.raises(ValueError, match="real number"):
        report_meta_gradient(trial, cast(Any, None))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"meta_optimizer": "nope"}, id="unknown-meta-optimizer"),
        pytest.param({"fd_step": 0.0}, id="fd_step-zero"),
        pytest.param({"fd_step": -0.01}, id="fd_step-negative"),
        pytest.param({"fd_step": math.nan}, id="fd_step-nan"),
        pytest.param({"eta0": 0.0}, id="eta0-zero"),
        pytest.param({"eta0": -1.0}, id="eta0-negative"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object]) -> None:
    """Bad constructor arguments raise ValueError at construction time."""
    with pytest.raises(ValueError):
        MetaGradientSampler(**cast(Any, kwargs))


@pytest.mark.parametrize(
    ("name", "options"),
    [("bracket", {}), ("adam", {}), ("paper", {"lr": 1e-4})],
)
def test_every_registered_meta_optimizer_runs(
    quad: Quadratic, name: str, options: dict[str, float]
) -> None:
    """Every registered meta-optimizer drives a study, with ``meta_optimizer_options``
    forwarded: proposals stay in bounds and the best trial improves on the first one.
    (``"paper"`` needs a smaller ``μ0`` than its default 0.01 here: with ``L ≈ 63`` the
    paper's schedule bounces between the bounds, as the GUIDE notes.)"""
    sampler = MetaGradientSampler(
        deterministic=True, param="lr", meta_optimizer=name, meta_optimizer_options=options
    )
    study = optuna.create_study(sampler=sampler)
    study.optimize(task_objective(quad, T, low=LOW, high=HIGH), n_trials=15)
    assert all(tr.state == TrialState.COMPLETE for tr in study.trials)
    assert all(LOW <= lr <= HIGH for lr in lrs(study))
    assert study.best_value < study.trials[0].value  # type: ignore[operator]


# ---------------------------------------------------------------------- 5. statelessness
@pytest.mark.parametrize("kind", ["gradient", "black_box"])
def test_alternating_sampler_instances_match_one_sampler(
    quad: Quadratic, tmp_path: Path, kind: str
) -> None:
    """The sampler keeps no state of its own: two instances taking turns on one SQLite study
    (5 trials each, through ``optuna.load_study(..., sampler=...)``) propose exactly the
    step sizes of a single sampler run uninterrupted. In the black-box case the
    finite-difference pairs straddle the switches (trial 4 probes, trial 5 pairs)."""
    objective = gradient_objective(quad) if kind == "gradient" else black_box_objective(quad)
    n_chunks, chunk = 4, 5

    reference = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    reference.optimize(objective, n_trials=n_chunks * chunk)

    url = f"sqlite:///{tmp_path}/alternate.db"
    optuna.create_study(study_name="alt", storage=url)
    samplers = [MetaGradientSampler(deterministic=True, param="lr", eta0=0.1) for _ in range(2)]
    for k in range(n_chunks):
        study = optuna.load_study(study_name="alt", storage=url, sampler=samplers[k % 2])
        study.optimize(objective, n_trials=chunk)
    final = optuna.load_study(study_name="alt", storage=url)
    assert lrs(final) == lrs(reference)
    # A third, fresh instance agrees on the state too.
    assert estimate(
        final, MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    ) == estimate(reference)


def test_estimate_agrees_with_best_trial(quad: Quadratic) -> None:
    """``sampler.meta_optimizer_for(study).estimate()`` (also with ``param=None``) agrees
    with the best trial's step size once converged. The tolerance is 1e-8 relative
    (~√eps): at the minimum ``f`` is flat to second order, so step sizes 1e-11 apart give
    the same float value and the best trial is the first of them."""
    sampler = MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    study = optuna.create_study(sampler=sampler)
    study.optimize(task_objective(quad, T, low=LOW, high=HIGH), n_trials=30)
    optimizer = sampler.meta_optimizer_for(study)
    assert optimizer.converged
    assert rel(optimizer.estimate(), study.best_params["lr"]) <= 1e-8
    assert (
        MetaGradientSampler(deterministic=True).meta_optimizer_for(study).estimate()
        == optimizer.estimate()
    )


@pytest.mark.filterwarnings(_INDEPENDENT)
def test_seeded_runs_are_reproducible(quad: Quadratic) -> None:
    """The same seed gives the same sequence of parameters, the step size and another float
    sampled independently; another seed changes only the independent one (the step-size
    trajectory is deterministic)."""
    base = gradient_objective(quad)

    def objective(trial: Trial) -> float:
        value = base(trial)
        return value * (1.0 + trial.suggest_float("noise", 0.0, 1e-3))

    def run(seed: int) -> list[dict[str, float]]:
        study = optuna.create_study(
            sampler=MetaGradientSampler(deterministic=True, param="lr", seed=seed)
        )
        study.optimize(objective, n_trials=12)
        return [dict(tr.params) for tr in study.trials]

    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert [p["noise"] for p in first] != [p["noise"] for p in other]


# ---------------------------------------------------------------------- 6. threads
def test_n_jobs_2_threads(quad: Quadratic, eta_star: float) -> None:
    """``n_jobs=2`` (two threads, one in-memory study): every trial completes, no two trials
    that ran at the same time share a step size before the search converged (the
    running trial's step size is avoided), and the search converges to ``η*`` (1e-6).

    After convergence the sampler re-proposes the converged ``η``, so overlaps are counted
    only up to the first trial within 1e-9 of the final estimate."""
    base = task_objective(quad, T, low=LOW, high=HIGH)

    def objective(trial: Trial) -> float:
        value = base(trial)
        time.sleep(0.005)  # make the two threads' trials overlap
        return value

    study = optuna.create_study(
        sampler=MetaGradientSampler(deterministic=True, param="lr", eta0=0.1)
    )
    study.optimize(objective, n_trials=60, n_jobs=2)
    trials = sorted(study.trials, key=lambda tr: tr.number)
    assert len(trials) == 60
    assert all(tr.state == TrialState.COMPLETE for tr in trials)
    final = estimate(study)
    assert rel(final, eta_star) <= 1e-6
    cut = next(
        (i for i, tr in enumerate(trials) if rel(tr.params["lr"], final) <= 1e-9), len(trials)
    )
    before = trials[:cut]
    overlapping_duplicates = [
        (a.number, b.number)
        for i, a in enumerate(before)
        for b in before[i + 1 :]
        if a.params["lr"] == b.params["lr"]
        and a.datetime_start is not None
        and b.datetime_start is not None
        and a.datetime_complete is not None
        and b.datetime_complete is not None
        and a.datetime_start < b.datetime_complete
        and b.datetime_start < a.datetime_complete
    ]
    assert overlapping_duplicates == []


# ---------------------------------------------------------------------- bugs found
@pytest.mark.filterwarnings(_INDEPENDENT)
def test_meta_optimizer_for_param_none_inspects_the_tuned_parameter(quad: Quadratic) -> None:
    """With ``param=None`` the sampler tunes the only *continuous* float (``lr``, not the
    stepped ``x``); ``meta_optimizer_for(study)`` must inspect that same parameter."""
    base = task_objective(quad, T, low=LOW, high=HIGH)

    def objective(trial: Trial) -> float:
        trial.suggest_float("x", 0.0, 10.0, step=0.5)
        return base(trial)

    sampler = MetaGradientSampler(deterministic=True, eta0=0.1, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    assert sampler.meta_optimizer_for(study).estimate() == pytest.approx(
        sampler.meta_optimizer_for(study, "lr").estimate(), rel=1e-12
    )


def test_black_box_search_does_not_stall(quad: Quadratic, eta_star: float) -> None:
    """A deterministic black-box objective re-evaluated at a step size already told gives
    the identical record, so the search may only repeat a probe once the meta-optimizer
    has converged. (An earlier version recorded each pair at the arithmetic midpoint of
    ``(η, η·e^h)`` instead of at the asked ``η``; from trial 40 on it re-evaluated the
    same pair forever, 0.6% from ``η*``.) With the pairs centred the estimate gets within
    1e-6 of ``η*`` in 60 trials."""
    sampler = MetaGradientSampler(deterministic=True, param="lr")
    study = optuna.create_study(sampler=sampler)
    study.optimize(black_box_objective(quad), n_trials=60)
    probes = [tr.params["lr"] for tr in study.trials if tr.number % 2 == 0]
    optimizer = sampler.meta_optimizer_for(study)
    assert optimizer.converged or len(set(probes)) == len(probes)
    assert rel(optimizer.estimate(), eta_star) <= 1e-6


def test_n_jobs_2_threads_black_box(quad: Quadratic, eta_star: float) -> None:
    """``n_jobs=2`` on the black-box objective (the other thread completes the
    finite-difference pair of a running probe): every trial completes and the best trial
    is within 1% of ``η*`` after 80 trials."""

    def objective(trial: Trial) -> float:
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        time.sleep(0.005)
        return quad.meta_objective(lr, T, log=False)

    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, param="lr"))
    study.optimize(objective, n_trials=80, n_jobs=2)
    assert all(tr.state == TrialState.COMPLETE for tr in study.trials)
    assert rel(study.best_params["lr"], eta_star) < 1e-2


# ---------------------------------------------------------------------- meta_optimizer="auto"
def test_auto_uses_the_bracket_for_task_objective_on_a_closed_form(quad: Quadratic) -> None:
    """``task_objective`` on an exact task marks its trials; ``"auto"`` then brackets."""
    sampler = MetaGradientSampler(param="lr", eta0=0.1)
    study = optuna.create_study(sampler=sampler)
    study.optimize(task_objective(quad, T), n_trials=3)
    assert sampler._meta_optimizer_name(study) == "bracket"
    assert isinstance(sampler.meta_optimizer_for(study), BracketingMetaOptimizer)


def test_auto_black_box_is_the_model_without_pairs_and_recommends_the_posterior_minimum() -> None:
    """An unchanged noisy objective: ``"auto"`` picks the model, which learns from values
    (no finite-difference roles stored, no repeated step size), and the recommended step
    size is near the optimum on average over seeds (fresh noise in every trial)."""
    x_star = math.log(0.05)
    errors = []
    for seed in range(4):
        rng = np.random.default_rng(seed)

        def objective(trial: Trial, rng: np.random.Generator = rng) -> float:
            lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
            return (math.log(lr) - x_star) ** 2 + 1.0 + 0.1 * float(rng.normal())

        sampler = MetaGradientSampler(param="lr", seed=seed)
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=25)
        assert sampler._meta_optimizer_name(study) == "model"
        assert all(tr.system_attrs.get("l2l_tune:role") is None for tr in study.trials)
        lrs = [tr.params["lr"] for tr in study.trials]
        assert len(set(lrs)) == len(lrs)
        errors.append(abs(math.log(sampler.recommended_step_size(study)) - x_star))
    assert float(np.mean(errors)) < 0.35, errors


@pytest.mark.parametrize(("optimum", "divergence"), [(0.005, 0.012), (0.0008, 0.004)])
def test_auto_default_with_nan_above_divergence(optimum: float, divergence: float) -> None:
    """The default sampler (``"auto"`` = the model on a black box) on an objective that
    returns NaN once training diverges: no step size repeated, a few FAILs, and the
    recommendation at the optimum below the divergence threshold."""

    def objective(trial: Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        if lr > divergence:
            return float("nan")
        return (math.log(lr) - math.log(optimum)) ** 2 + 1.0

    sampler = MetaGradientSampler(param="lr", seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=30)
    lrs = [tr.params["lr"] for tr in study.trials]
    assert len(set(lrs)) == len(lrs)
    assert sum(tr.state == TrialState.FAIL for tr in study.trials) <= 6
    assert rel(sampler.recommended_step_size(study), optimum) <= 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"deterministic": "yes"}, "deterministic"), ({"meta_optimizer": "gp"}, "meta_optimizer")],
)
def test_auto_arguments_are_checked(kwargs: dict[str, Any], match: str) -> None:
    """``deterministic`` takes None/True/False; ``meta_optimizer`` names ``auto`` or a key."""
    with pytest.raises(ValueError, match=match):
        MetaGradientSampler(**kwargs)


def test_report_meta_gradient_mapping_by_parameter_name(quad: Quadratic) -> None:
    """``report_meta_gradient(trial, {"lr": g, "weight_decay": g2})`` (the drop-in optimizers'
    ``hypergradients()``) tunes ``lr`` exactly as reporting ``g`` does; the other entries are
    stored with the trial; a mapping without a number for ``lr`` is a trial without gradient
    (the search runs as on a black box), with a warning."""

    def objective(as_mapping: bool) -> Objective:
        def run(trial: Trial) -> float:
            lr = trial.suggest_float("lr", LOW, HIGH, log=True)
            wd = trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True)
            value, grad = quad.value_and_gradient(lr, T, log=False)
            report_meta_gradient(trial, {"lr": grad, "weight_decay": wd} if as_mapping else grad)
            return value

        return run

    studies = []
    for as_mapping in (True, False):
        study = optuna.create_study(
            sampler=MetaGradientSampler(param="lr", deterministic=True, seed=0)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # weight_decay: independent sampler
            study.optimize(objective(as_mapping), n_trials=20)
        studies.append(study)
    assert lrs(studies[0]) == lrs(studies[1])
    stored = studies[0].trials[3].system_attrs["l2l_tune:meta_gradient"]
    assert set(stored) == {"lr", "weight_decay"}
    assert stored["weight_decay"] == studies[0].trials[3].params["weight_decay"]

    def per_group(trial: Trial) -> float:
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        value, grad = quad.value_and_gradient(lr, T, log=False)
        report_meta_gradient(trial, {"lr": [grad, grad], "momentum": 1.0})
        return value

    study = optuna.create_study(sampler=MetaGradientSampler(param="lr", deterministic=True))
    with pytest.warns(NonFiniteMetaGradientWarning, match="no number for the step size 'lr'"):
        study.optimize(per_group, n_trials=8)
    black_box = optuna.create_study(sampler=MetaGradientSampler(param="lr", deterministic=True))
    black_box.optimize(black_box_objective(quad), n_trials=8)
    assert lrs(study) == lrs(black_box)  # finite-difference pairs, as without any gradient


@pytest.mark.parametrize(
    ("grad", "match"),
    [
        ({1: 0.5}, "keys"),
        ({"lr": "steep"}, r"grad\['lr'\]"),
        ({"lr": [0.5, None]}, r"grad\['lr'\]"),
        ({"lr": True}, r"grad\['lr'\]"),
    ],
)
def test_report_meta_gradient_rejects_bad_mappings(grad: Any, match: str) -> None:
    study = optuna.create_study(sampler=MetaGradientSampler(deterministic=True, param="lr"))
    trial = study.ask()
    with pytest.raises(ValueError, match=match):
        report_meta_gradient(trial, grad)
