"""Meta-optimizers (l2l_tune.meta): ask/tell, replay from history, robustness, convergence."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest

from l2l_tune import Quadratic
from l2l_tune.meta import (
    META_OPTIMIZERS,
    BracketingMetaOptimizer,
    LogAdamMetaOptimizer,
    MetaOptimizer,
    MetaRecord,
    NonFiniteMetaGradientWarning,
    ProjectedMetaGD,
    make_meta_optimizer,
)

NAMES = ["bracket", "paper", "adam"]
KWARGS: dict[str, dict[str, Any]] = {
    "bracket": {"eta0": 0.02, "expand": 3.0, "tol": 1e-12},
    "paper": {"eta0": 0.02, "lr": 1e-4},
    "adam": {"eta0": 0.02, "lr": 0.3, "beta1": 0.8},
}


def test_registry_and_factory() -> None:
    """The registry maps the three names to their classes (others may be registered beside
    them); make_meta_optimizer passes kwargs."""
    assert {"bracket", "paper", "adam"} <= set(META_OPTIMIZERS)
    assert META_OPTIMIZERS["bracket"] is BracketingMetaOptimizer
    assert META_OPTIMIZERS["paper"] is ProjectedMetaGD
    assert META_OPTIMIZERS["adam"] is LogAdamMetaOptimizer
    opt = make_meta_optimizer("paper", eta0=0.5, lr=0.2)
    assert isinstance(opt, ProjectedMetaGD) and opt.eta0 == 0.5 and opt.lr == 0.2


def test_auto_is_the_bracket_on_exact_tasks_and_the_model_otherwise() -> None:
    """``"auto"`` (the tuner's default) reads the task's exact_meta_objective declaration;
    a task without it is treated as a training run."""
    from l2l_tune import Quadratic, StepSizeTuner
    from l2l_tune.meta import GaussianProcessMetaOptimizer, resolve_meta_optimizer

    assert resolve_meta_optimizer("auto", exact=True) == "bracket"
    assert resolve_meta_optimizer("auto", exact=False) == "model"
    assert resolve_meta_optimizer("paper", exact=False) == "paper"
    with pytest.raises(ValueError, match="meta_optimizer"):
        resolve_meta_optimizer("nope", exact=True)
    task = Quadratic.random(d=10, seed=0, variant="authors")
    tuner = StepSizeTuner(max_evals=60).fit(task, t=80)
    assert isinstance(tuner.meta_optimizer_, BracketingMetaOptimizer)
    assert abs(tuner.step_size_ - task.optimal_step_size(80)) <= 1e-9 * tuner.step_size_

    class Undeclared:
        """The quadratic's methods without its declaration: a user's own task."""

        def meta_objective(self, eta: float, t: int, *, split: str = "train", log: bool = True):
            return task.meta_objective(eta, t, split=split, log=log)

        def value_and_gradient(self, eta: float, t: int, *, split: str = "train", log: bool = True):
            return task.value_and_gradient(eta, t, split=split, log=log)

        def step_size_scale(self) -> float:
            return task.step_size_scale()

    tuner = StepSizeTuner(max_evals=12).fit(Undeclared(), t=80)
    assert isinstance(tuner.meta_optimizer_, GaussianProcessMetaOptimizer)
    assert math.isfinite(tuner.step_size_) and tuner.n_evals_ <= 12


def test_make_meta_optimizer_unknown_name() -> None:
    """An unknown registry name raises ValueError naming the argument."""
    with pytest.raises(ValueError, match="meta_optimizer"):
        make_meta_optimizer("sgd")


@pytest.mark.parametrize("name", NAMES)
def test_ask_starts_at_eta0_and_is_stable(name: str) -> None:
    """The first ask is eta0, and ask is idempotent until something is told."""
    opt = make_meta_optimizer(name, **KWARGS[name])
    assert opt.ask() == KWARGS[name]["eta0"] == opt.ask()
    assert opt.best is None and not opt.converged
    opt.tell(0.02, 1.0, 5.0)
    first = opt.ask()
    assert opt.ask() == first
    assert opt.best == MetaRecord(0.02, 1.0, 5.0)


def _run_with_faults(name: str, q: Quadratic, steps: int) -> MetaOptimizer:
    """Drive an optimizer on the quadratic, injecting NaN/inf tells at fixed steps."""
    opt = make_meta_optimizer(name, **KWARGS[name])
    faults = {
        2: (math.nan, math.nan),
        5: (math.inf, math.inf),
        7: (1.0, math.nan),
        9: (math.inf, None),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        for k in range(steps):
            eta = opt.ask()
            if k in faults:
                value, grad = faults[k]
            else:
                value, grad = q.value_and_gradient(eta, 80)
            opt.tell(eta, value, grad)
            replay = type(opt).from_history(opt.history, **KWARGS[name])
            assert replay.ask() == opt.ask(), (name, k)
            assert replay.converged == opt.converged
            assert replay.estimate() == opt.estimate()
            as_dicts = type(opt).from_history([r.to_dict() for r in opt.history], **KWARGS[name])
            assert as_dicts.ask() == opt.ask(), (name, k)
    return opt


@pytest.mark.parametrize("name", NAMES)
def test_from_history_reproduces_next_ask(name: str) -> None:
    """from_history(records, **same_kwargs) proposes the same next η, also after NaN/inf tells."""
    q = Quadratic.random(20, 0, variant="authors")
    opt = _run_with_faults(name, q, 25)
    assert len(opt.history) == 25
    assert all(math.isfinite(r.eta) and r.eta >= 0 for r in opt.history)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_tell_warns_and_never_gives_nan(name: str) -> None:
    """Telling NaN/inf emits NonFiniteMetaGradientWarning and every later ask is a finite η ≥ 0."""
    opt = make_meta_optimizer(name, **KWARGS[name])
    bad = [
        (math.nan, math.nan),
        (math.nan, 1.0),
        (1.0, math.nan),
        (math.inf, math.inf),
        (1.0, -math.inf),
    ]
    for value, grad in bad:
        eta = opt.ask()
        with pytest.warns(NonFiniteMetaGradientWarning):
            opt.tell(eta, value, grad)
        nxt = opt.ask()
        assert math.isfinite(nxt) and nxt >= 0.0, (value, grad, nxt)
        assert math.isfinite(opt.estimate())
    # Finite tells do not warn.
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteMetaGradientWarning)
        opt.tell(opt.ask(), 0.5, -0.1)
    assert math.isfinite(opt.ask())


@pytest.mark.parametrize("name", NAMES)
def test_tell_rejects_bad_eta(name: str) -> None:
    """tell() with a negative, NaN or infinite η raises ValueError naming eta."""
    opt = make_meta_optimizer(name)
    for eta in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="eta"):
            opt.tell(eta, 1.0, 1.0)
    assert opt.history == []


@pytest.mark.parametrize("name", NAMES)
def test_bounds_are_respected(name: str) -> None:
    """With bounds=(low, high) every proposal lies in [low, high], whatever is told."""
    low, high = 1e-3, 1e-1
    opt = make_meta_optimizer(name, eta0=0.05, bounds=(low, high))
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        for k in range(60):
            eta = opt.ask()
            assert low <= eta <= high, (k, eta)
            grad = float(rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-6, 6))
            if k % 13 == 7:
                grad = math.nan
            opt.tell(eta, float(rng.uniform(0, 1)), grad)
        assert low <= opt.estimate() <= high
    # Pushed consistently one way, the proposal ends at the bound.
    up = make_meta_optimizer(name, eta0=0.05, bounds=(low, high))
    for _ in range(40):
        up.tell(up.ask(), 1.0, -1e3)
    assert up.ask() == pytest.approx(high)


def test_paper_update_rule_is_exact() -> None:
    """ProjectedMetaGD: η_{k+1} = max(0, η_k − 0.01/√k · g_k) exactly (η_k: the told η)."""
    opt = ProjectedMetaGD(eta0=0.1)
    assert opt.lr == 0.01
    rng = np.random.default_rng(1)
    for k in range(1, 40):
        eta_k = float(rng.uniform(0.0, 0.2))
        g_k = float(rng.standard_normal() * 10.0 ** rng.uniform(-2, 2))
        opt.tell(eta_k, 1.0, g_k)
        assert opt.ask() == max(0.0, eta_k - 0.01 / math.sqrt(k) * g_k), k
    # A large positive gradient projects onto η = 0.
    opt.tell(0.05, 1.0, 1e6)
    assert opt.ask() == 0.0
    # A non-finite gradient is skipped: η stays at the told step size.
    with pytest.warns(NonFiniteMetaGradientWarning):
        opt.tell(0.07, math.inf, math.nan)
    assert opt.ask() == 0.07


def test_paper_converges_on_fig1_quadratic() -> None:
    """Projected meta-GD, μ_k = 0.01/√k, log objective (Fig 1: t = 80, η0 = 0.1) reaches η*:
    within 10% after 300 meta-steps (the paper's Fig 1), to 1e-8 after 2000."""
    q = Quadratic.random(20, 0, variant="authors")
    eta_star = q.optimal_step_size(80)
    opt = ProjectedMetaGD(eta0=0.1, lr=0.01)
    for k in range(1, 2001):
        eta = opt.ask()
        opt.tell(eta, *q.value_and_gradient(eta, 80))
        if k == 300:
            assert abs(opt.estimate() - eta_star) <= 0.1 * eta_star
    assert abs(opt.estimate() - eta_star) <= 1e-8 * eta_star


def test_adam_converges_on_quadratic() -> None:
    """LogAdam on the log objective reaches η* from 10x below and 5x above."""
    q = Quadratic.random(20, 1)
    eta_star = q.optimal_step_size(80)
    for eta0 in (0.1 * eta_star, 5 * eta_star):
        opt = LogAdamMetaOptimizer(eta0=eta0, lr=0.2)
        for _ in range(1000):
            eta = opt.ask()
            opt.tell(eta, *q.value_and_gradient(eta, 80))
        assert abs(opt.estimate() - eta_star) <= 1e-6 * eta_star


def test_adam_survives_huge_finite_gradient() -> None:
    """A finite but huge meta-gradient (|g·η| > 1e154) shrinks η instead of crashing."""
    opt = LogAdamMetaOptimizer(eta0=0.1)
    opt.tell(0.1, 1.0, 1e200)
    nxt = opt.ask()
    assert math.isfinite(nxt) and 0.0 < nxt < 0.1


# ---------------------------------------------------------------------- bracketing
@pytest.mark.parametrize("log", [True, False])
@pytest.mark.parametrize(
    ("variant", "seed"), [("paper", 0), ("paper", 1), ("authors", 0), ("authors", 1)]
)
def test_bracket_converges_to_optimum(variant: str, seed: int, log: bool) -> None:
    """ "bracket" reaches η* to 1e-8 relative in ≤ 60 evaluations from 0.1/L, 10/L and 0.1."""
    q = Quadratic.random(20, seed, variant=variant)
    L = q.smoothness
    for t in (80, 1000):
        eta_star = q.optimal_step_size(t)
        for eta0 in (0.1 / L, 10 / L, 0.1):
            opt = BracketingMetaOptimizer(eta0=eta0)
            with warnings.catch_warnings():
                # log=False at 10/L and t = 1000 overflows: a diverged run, by design.
                warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
                for _ in range(60):
                    if opt.converged:
                        break
                    eta = opt.ask()
                    opt.tell(eta, *q.value_and_gradient(eta, t, log=log))
            assert opt.converged, (t, eta0 * L)
            assert abs(opt.estimate() - eta_star) <= 1e-8 * eta_star, (t, eta0 * L)


def test_bracket_kink_step_on_fig1_quadratics() -> None:
    """On the Fig-1 quadratics (t = 80), started like the bench (0.1/L within [1e-3, 10]/L),
    the bracket reaches 1 % of F* in ≤ 9 evaluations (median over seeds; 16 before the kink
    step) and |η − η*| ≤ 1e-6·η* within 26 evaluations on every seed."""
    to_1pct, to_1e6 = [], []
    for seed in range(5):
        q = Quadratic.random(20, seed, variant="authors")
        L, t = q.smoothness, 80
        eta_star = q.optimal_step_size(t)
        log_f_star = t * q.meta_objective(eta_star, t)
        opt = BracketingMetaOptimizer(eta0=0.1 / L, bounds=(1e-3 / L, 10 / L), tol=1e-10)
        best, hit_1pct, hit_1e6 = math.inf, None, None
        for k in range(1, 27):
            eta = opt.ask()
            value, grad = q.value_and_gradient(eta, t)
            opt.tell(eta, value, grad)
            best = min(best, t * value)
            if hit_1pct is None and best - log_f_star <= math.log(1.01):
                hit_1pct = k
            if abs(opt.estimate() - eta_star) <= 1e-6 * eta_star:
                hit_1e6 = k
                break
        assert hit_1pct is not None and hit_1e6 is not None, seed
        to_1pct.append(hit_1pct)
        to_1e6.append(hit_1e6)
    assert float(np.median(to_1pct)) <= 9, to_1pct
    assert max(to_1e6) <= 26, to_1e6


def test_bracket_expands_and_shrinks_geometrically() -> None:
    """Bracketing: η is multiplied by `expand` while g < 0, divided while g > 0."""
    opt = BracketingMetaOptimizer(eta0=1.0, expand=4.0)
    opt.tell(1.0, 0.0, -1.0)
    assert opt.ask() == 4.0
    opt.tell(4.0, -1.0, -1.0)
    assert opt.ask() == 16.0
    down = BracketingMetaOptimizer(eta0=1.0, expand=4.0)
    down.tell(1.0, 0.0, 1.0)
    assert down.ask() == 0.25
    down.tell(0.25, -1.0, 1.0)
    assert down.ask() == 0.0625
    # A diverged run counts as "too large": it closes a bracket, bisected arithmetically
    # when b ≤ 4a.
    with pytest.warns(NonFiniteMetaGradientWarning):
        opt.tell(16.0, math.inf, math.nan)
    assert opt.ask() == 10.0
    wide = BracketingMetaOptimizer(eta0=1.0)
    wide.tell(1.0, 0.0, -1.0)
    with pytest.warns(NonFiniteMetaGradientWarning):
        wide.tell(100.0, math.inf, math.inf)
    assert wide.ask() == pytest.approx(10.0, rel=1e-15)  # geometric midpoint when b > 4a


def test_bracket_interpolation_inside_bracket() -> None:
    """Inside a −/+ bracket the proposal minimises the cubic through both ends' values and
    slopes in log η: exact for a meta-objective quadratic in log η."""
    opt = BracketingMetaOptimizer(eta0=1.0)
    log2 = math.log(2.0)
    # f(η) = (log η − log 2)², f'(η) = 2(log η − log 2)/η: minimum at 2.
    opt.tell(1.0, log2**2, -2.0 * log2)
    opt.tell(4.0, log2**2, 2.0 * log2 / 4.0)
    assert opt.ask() == pytest.approx(2.0, rel=1e-14)
    opt.tell(2.0, 0.0, 0.0)
    assert opt.converged and opt.ask() == 2.0 and opt.estimate() == 2.0


def test_bracket_keeps_the_bracket_with_the_lowest_value() -> None:
    """With g(1) < 0 < g(2.5) and f(1) far below every other value, the next η lies in (1, 2.5).

    The history is the first three evaluations of StepSizeTuner on a TbT least-squares
    batch (d = 100, n = 50, t = 40; η in units of 1/L): at 4/L all tasks are truncated,
    a plateau slightly below f(2.5/L) but far above f(1/L).
    """
    opt = BracketingMetaOptimizer(eta0=1.0)
    opt.tell(1.0, -0.156, -0.489)
    opt.tell(4.0, 0.1672, 0.0)
    opt.tell(2.5, 0.1679, 2.73)
    assert 1.0 < opt.ask() < 2.5


def test_bracket_never_takes_a_chaotic_point_as_the_best() -> None:
    """A finite value with an overflowed meta-gradient (a chaotic SGD run) cannot win on value.

    The history is the start of a train-by-validation MNIST run (1000 + 1000 samples, 20%
    label noise, t = 1000): near the edge of stability the network barely learns and its
    validation loss sits below that of an overfitted one, while the minimum lies far
    lower, at small step sizes. The next step size must go below 0.36, not above it.
    """
    opt = BracketingMetaOptimizer(eta0=1.43)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        opt.tell(1.43, 0.000761, math.inf)
    opt.tell(0.357, 0.00103, 2.8e4)
    assert opt.ask() < 0.357


# ---------------------------------------------------------------------- constructor checks
@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("bracket", {"eta0": 0.0}, "eta0"),
        ("paper", {"eta0": -1.0}, "eta0"),
        ("adam", {"eta0": math.nan}, "eta0"),
        ("bracket", {"eta0": math.inf}, "eta0"),
        ("bracket", {"expand": 1.0}, "expand"),
        ("bracket", {"tol": 0.0}, "tol"),
        ("paper", {"lr": 0.0}, "lr"),
        ("adam", {"beta1": 1.0}, "beta1"),
        ("adam", {"beta2": -0.1}, "beta2"),
        ("adam", {"eps": 0.0}, "eps"),
        ("bracket", {"bounds": (0.2, 0.1)}, "bounds"),
        ("paper", {"bounds": (-1.0, 0.1)}, "bounds"),
        ("adam", {"bounds": (0.0, math.nan)}, "bounds"),
        ("bracket", {"bounds": 0.5}, "bounds"),
    ],
)
def test_constructor_rejects_bad_arguments(name: str, kwargs: dict[str, Any], match: str) -> None:
    """Bad constructor arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        make_meta_optimizer(name, **kwargs)


def test_meta_record_helpers() -> None:
    """MetaRecord.finite needs finite value and gradient; to_dict round-trips via from_history."""
    assert MetaRecord(0.1, 1.0, 2.0).finite
    assert not MetaRecord(0.1, 1.0, None).finite
    assert not MetaRecord(0.1, math.inf, 2.0).finite
    assert not MetaRecord(0.1, 1.0, math.nan).finite
    record = MetaRecord(0.1, 1.0, -2.0)
    assert record.to_dict() == {"eta": 0.1, "value": 1.0, "grad": -2.0}
    opt = ProjectedMetaGD.from_history([record.to_dict()])
    assert opt.history == [record]
    partial = MetaRecord(0.2, 0.5, None, partial=True)
    assert partial.to_dict() == {"eta": 0.2, "value": 0.5, "grad": None, "partial": True}
    opt = ProjectedMetaGD.from_history([record.to_dict(), partial.to_dict()])
    assert opt.history == [record, partial]
    assert opt.best == record  # a partial run's value is never the best


def test_bracket_reads_value_only_records_uphill_of_the_best_point() -> None:
    """A value-only record (dropped NaN gradient, pruned run) above the best value is uphill
    of the best point: "+" on its right, which closes a bracket; one below is ignored."""
    opt = BracketingMetaOptimizer(eta0=0.01, bounds=(1e-5, 1.0))
    opt.tell(0.01, 1.0, -1.0)
    assert opt.ask() == pytest.approx(0.04)  # expanding
    opt.tell(0.04, 5.0, None)
    assert 0.01 < opt.ask() < 0.04  # inside the bracket [0.01, 0.04]
    low = BracketingMetaOptimizer(eta0=0.01, bounds=(1e-5, 1.0))
    low.tell(0.01, 1.0, -1.0)
    low.tell(0.04, 0.5, None, partial=True)
    assert low.ask() == pytest.approx(0.04)  # below the best value: no information


def test_ask_against_a_bound_splits_the_gap_next_to_it() -> None:
    """When every step outward is clipped to an occupied bound, ``ask`` splits the free gap
    next to the proposal instead of repeating an occupied step size."""
    opt = BracketingMetaOptimizer(eta0=1e-4, bounds=(1e-4, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        opt.tell(1e-4, math.inf, None)
    eta = opt.ask(pending=[1e-4, 4e-4])
    assert eta == pytest.approx(2e-4)
