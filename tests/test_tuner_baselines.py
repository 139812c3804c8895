"""StepSizeTuner and the grid/random-search baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from l2l_tune import (
    BracketingMetaOptimizer,
    EvalRecord,
    GridSearch,
    LeastSquares,
    MetaRecord,
    ProjectedMetaGD,
    Quadratic,
    RandomSearch,
    StepSizeTuner,
)
from l2l_tune.meta import META_OPTIMIZERS


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tuner_finds_optimum_on_quadratic(seed: int) -> None:
    """StepSizeTuner().fit(Quadratic.random(20, s), t=80) gives |η − η*| ≤ 1e-8 η*, converged."""
    q = Quadratic.random(20, seed)
    tuner = StepSizeTuner().fit(q, t=80)
    eta_star = q.optimal_step_size(80)
    assert abs(tuner.step_size_ - eta_star) <= 1e-8 * eta_star
    assert tuner.converged_
    assert tuner.meta_objective_ == q.meta_objective(tuner.step_size_, 80)
    assert tuner.n_evals_ == len(tuner.history_) <= 60


def test_tuner_history_records_each_evaluation() -> None:
    """history_ holds η, the value and gradient at η, and non-negative seconds, in ask order."""
    q = Quadratic.random(20, 5)
    seen: list[EvalRecord] = []
    tuner = StepSizeTuner(callback=seen.append).fit(q, t=80)
    assert seen == tuner.history_
    assert tuner.history_[0].eta == q.step_size_scale()  # eta0 defaults to 1/L
    for record in tuner.history_:
        value, grad = q.value_and_gradient(record.eta, 80)
        assert record.value == value and record.grad == grad
        assert record.seconds >= 0.0
    result = tuner.result_dict()
    assert result["n_evals"] == tuner.n_evals_ and result["meta_optimizer"] == "bracket"
    assert result["step_size"] == tuner.step_size_ and result["converged"] is True
    json.dumps(result)  # JSON-friendly


@pytest.mark.parametrize("name", ["bracket", "paper", "adam"])
def test_meta_optimizer_rebuilt_from_history_proposes_same_eta(name: str) -> None:
    """A meta-optimizer rebuilt from history_ (MetaRecords) proposes the tuner's next η."""
    q = Quadratic.random(20, 2)
    eta0 = 0.5 / q.smoothness
    tuner = StepSizeTuner(meta_optimizer=name, eta0=eta0, max_evals=15).fit(q, t=80)
    records = [MetaRecord(r.eta, r.value, r.grad) for r in tuner.history_]
    rebuilt = META_OPTIMIZERS[name].from_history(records, eta0=eta0, tol=1e-10)
    assert rebuilt.ask() == tuner.meta_optimizer_.ask()
    assert rebuilt.estimate() == tuner.step_size_


def test_tuner_accepts_meta_optimizer_instance_and_options() -> None:
    """A MetaOptimizer instance is used as given; meta_optimizer_options reach a named one."""
    q = Quadratic.random(20, 0)
    opt = BracketingMetaOptimizer(eta0=0.01)
    tuner = StepSizeTuner(meta_optimizer=opt).fit(q, t=80)
    assert tuner.meta_optimizer_ is opt and opt.history[0].eta == 0.01
    paper = StepSizeTuner("paper", max_evals=5, meta_optimizer_options={"lr": 1e-5}).fit(q, t=80)
    assert isinstance(paper.meta_optimizer_, ProjectedMetaGD)
    assert paper.meta_optimizer_.lr == 1e-5 and paper.n_evals_ == 5


def test_tuner_on_least_squares_validation_split() -> None:
    """fit(batch, split="valid") minimises the TbV objective: the gradient changes sign there."""
    batch = LeastSquares(40, 1.0).sample(10, 20, 20, seed=3)
    tuner = StepSizeTuner().fit(batch, t=40, split="valid")
    eta = tuner.step_size_
    assert tuner.converged_
    assert tuner.meta_objective_ == batch.meta_objective(eta, 40, split="valid", log=True)
    assert batch.meta_gradient(eta * (1 - 1e-6), 40, split="valid", log=True) < 0.0
    assert batch.meta_gradient(eta * (1 + 1e-6), 40, split="valid", log=True) > 0.0
    grid = np.linspace(0.2, 5.0, 200) * eta
    values = [batch.meta_objective(float(e), 40, split="valid") for e in grid]
    assert batch.meta_objective(eta, 40, split="valid") <= min(values) * (1 + 1e-12)


def test_tuner_result_not_worse_than_its_own_evaluations() -> None:
    """The tuned step size's meta-objective is no worse than the best one the tuner evaluated."""
    batch = LeastSquares(100, 1.0).sample(30, 50, 0, seed=1)
    tuner = StepSizeTuner().fit(batch, t=40)
    best_seen = min(r.value for r in tuner.history_)
    assert tuner.meta_objective_ <= best_seen + 1e-12 * abs(best_seen)


def test_adam_tuner_on_plain_objective_with_large_eta0() -> None:
    """StepSizeTuner("adam", log=False) started above 2/L backs off instead of crashing."""
    q = Quadratic.random(20, 0)
    tuner = StepSizeTuner("adam", eta0=3 / q.smoothness, max_evals=30).fit(q, t=400, log=False)
    assert tuner.step_size_ < 3 / q.smoothness


def test_tuner_not_fitted() -> None:
    """result_dict() before fit raises AttributeError."""
    with pytest.raises(AttributeError, match="fit"):
        StepSizeTuner().result_dict()


# ---------------------------------------------------------------------- baselines
def test_grid_search_default_grid_and_argmin() -> None:
    """GridSearch's default grid is logspace(-6, 0, 25) and it picks the lowest value."""
    q = Quadratic.random(20, 0, variant="authors")
    search = GridSearch().fit(q, t=80)
    etas = np.array([r.eta for r in search.history_])
    assert np.array_equal(etas, np.logspace(-6, 0, 25))
    values = np.array([r.value for r in search.history_])
    assert all(r.grad is None for r in search.history_)
    assert np.array_equal(values, [q.meta_objective(float(e), 80) for e in etas])
    assert search.step_size_ == etas[np.argmin(values)]
    assert search.meta_objective_ == values.min()
    assert search.n_evals_ == 25
    # η* ≈ 0.031 at this setting: the choice is one of the two grid points around it.
    eta_star = q.optimal_step_size(80)
    below, above = etas[etas < eta_star].max(), etas[etas > eta_star].min()
    assert search.step_size_ in (below, above)


def test_grid_search_explicit_and_linear_grids() -> None:
    """An explicit grid is used as given; log_scale=False spaces the generated grid linearly."""
    q = Quadratic.random(20, 1)
    L = q.smoothness
    explicit = GridSearch(grid=[0.5 / L, 1.9 / L, 3 / L]).fit(q, t=80)
    assert [r.eta for r in explicit.history_] == [0.5 / L, 1.9 / L, 3 / L]
    assert explicit.step_size_ == 1.9 / L
    linear = GridSearch(low=0.1, high=0.5, n_points=5, log_scale=False).fit(q, t=10)
    assert np.allclose([r.eta for r in linear.history_], [0.1, 0.2, 0.3, 0.4, 0.5])


def test_random_search_seeded_and_in_bounds() -> None:
    """RandomSearch with a seed is reproducible, draws within [low, high], and picks its argmin."""
    q = Quadratic.random(20, 0)
    a = RandomSearch(n_evals=30, low=1e-4, high=0.1, seed=7).fit(q, t=80)
    b = RandomSearch(n_evals=30, low=1e-4, high=0.1, seed=7).fit(q, t=80)
    c = RandomSearch(n_evals=30, low=1e-4, high=0.1, seed=8).fit(q, t=80)
    etas_a = [r.eta for r in a.history_]
    assert etas_a == [r.eta for r in b.history_]
    assert etas_a != [r.eta for r in c.history_]
    assert all(1e-4 <= e <= 0.1 for e in etas_a) and len(etas_a) == 30
    assert a.step_size_ == min(a.history_, key=lambda r: r.value).eta
    lin = RandomSearch(n_evals=50, low=0.01, high=0.02, log_scale=False, seed=0).fit(q, t=5)
    assert all(0.01 <= r.eta <= 0.02 for r in lin.history_)


def test_search_on_least_squares_split() -> None:
    """Baselines evaluate the requested split of a least-squares batch."""
    batch = LeastSquares(20, 1.0).sample(3, 15, 15, seed=0)
    search = GridSearch(n_points=7).fit(batch, t=10, split="valid", log=False)
    for r in search.history_:
        assert r.value == batch.meta_objective(r.eta, 10, split="valid", log=False)
    assert math.isfinite(search.meta_objective_)


def test_plain_objective_underflow_stops_with_a_warning() -> None:
    """With log=False and a long unroll the last loss underflows to 0 (Theorem 3): the tuner
    warns, says it did not converge, and does not pretend η = 1/L is optimal."""
    q = Quadratic.random(20, 0)
    with pytest.warns(RuntimeWarning, match="underflowed"):
        tuner = StepSizeTuner().fit(q, t=10**5, log=False)
    assert tuner.converged_ is False
    # The log objective finds the true optimum at the same horizon.
    fitted = StepSizeTuner().fit(q, t=10**5, log=True)
    eta_star = q.optimal_step_size(10**5)
    assert abs(fitted.step_size_ - eta_star) <= 1e-8 * eta_star
