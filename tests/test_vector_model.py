"""VectorGaussianProcess: Bayesian optimisation of several hyperparameters on values and
hypergradients (noisy, diverging and black-box studies)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from _helpers import OPTIMUM, SPACE, bowl

from l2l_tune.meta import (
    VECTOR_META_OPTIMIZERS,
    Hyperparameter,
    HyperparameterSpace,
    NonFiniteMetaGradientWarning,
    VectorGaussianProcess,
    VectorLogAdam,
    VectorMetaOptimizer,
)

FAR_START = {"lr": 1e-3, "weight_decay": 1e-5, "momentum": 0.1}
PAIR = HyperparameterSpace((Hyperparameter("lr", 1e-4, 1.0), Hyperparameter("wd", 1e-4, 10.0)))


def noisy_study(
    optimizer: VectorMetaOptimizer,
    steps: int,
    seed: int,
    *,
    value_noise: float,
    gradient_noise: float,
    gradients: bool = True,
) -> float:
    """Tell ``steps`` noisy evaluations of the bowl; the bowl's value at the estimate."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        values = optimizer.ask()
        value, grads = bowl(values)
        noisy = {n: g * (1 + gradient_noise * rng.standard_normal()) for n, g in grads.items()}
        optimizer.tell(
            values, value + value_noise * rng.standard_normal(), noisy if gradients else None
        )
    return bowl(optimizer.estimate())[0]


def test_registered_by_name() -> None:
    assert VECTOR_META_OPTIMIZERS["model"] is VectorGaussianProcess


def test_noisy_far_start_beats_log_adam_on_every_seed() -> None:
    """Three hyperparameters from two decades off, values with noise 0.3 and hypergradients
    with 50 % multiplicative noise (signs flip): after 20 runs the model's pick is within
    0.05 of the minimum on each of 4 seeds; Adam on the log-hyperparameters, which trusts
    every hypergradient, is still ≥ 0.5 away on each."""
    for seed in range(4):
        model = noisy_study(
            VectorGaussianProcess(SPACE, start=FAR_START),
            20,
            seed,
            value_noise=0.3,
            gradient_noise=0.5,
        )
        adam = noisy_study(
            VectorLogAdam(SPACE, start=FAR_START), 20, seed, value_noise=0.3, gradient_noise=0.5
        )
        assert model <= 0.05 < 0.5 <= adam, (seed, model, adam)


def test_black_box_exact_bowl() -> None:
    """No hypergradients: a Sobol design of d + 2 points, then the model; within 30 runs
    the pick is within 0.02 of the minimum (bowl values are 0 there, ~10 at the design)."""
    optimizer = VectorGaussianProcess(SPACE)
    first = [optimizer.ask()]
    optimizer.tell(first[0], bowl(first[0])[0], None)
    for _ in range(4):
        first.append(optimizer.ask())
        optimizer.tell(first[-1], bowl(first[-1])[0], None)
    assert len({tuple(v.values()) for v in first}) == 5
    assert (
        noisy_study(optimizer, 25, 0, value_noise=0.0, gradient_noise=0.0, gradients=False) < 0.02
    )


def test_descent_crosses_decades_along_the_hypergradient() -> None:
    """Exact hypergradients from the far start: the steps double (log 3, 2 log 3, …) along
    the normalised direction while they improve, so lr gains a factor ≥ 20 in 3 runs."""
    optimizer = VectorGaussianProcess(SPACE, start=FAR_START)
    for _ in range(3):
        values = optimizer.ask()
        optimizer.tell(values, *bowl(values))
    assert optimizer.ask()["lr"] >= 20 * FAR_START["lr"]


def test_state_is_a_pure_function_of_the_history() -> None:
    optimizer = VectorGaussianProcess(SPACE, start=FAR_START)
    noisy_study(optimizer, 8, 1, value_noise=0.3, gradient_noise=0.5)
    records = [r.to_dict() for r in optimizer.history]
    rebuilt = VectorGaussianProcess.from_history(records, space=SPACE, start=FAR_START)
    assert rebuilt.ask() == optimizer.ask()
    assert rebuilt.estimate() == optimizer.estimate()


def diverging(values: dict[str, float]) -> tuple[float, dict[str, float] | None]:
    """The bowl, but every run with lr > 0.1 diverges (its optimum lr = 0.03 is inside)."""
    if values["lr"] > 0.1:
        return math.inf, None
    return bowl(values)


def test_diverged_runs_are_avoided_and_never_repeated() -> None:
    """Starting where every run diverges: the step sizes shrink (Theorem 3), the told
    divergences are never proposed again, and the pick is a finite run near the optimum."""
    optimizer = VectorGaussianProcess(
        SPACE, start={"lr": 0.5, "weight_decay": 1e-3, "momentum": 0.8}
    )
    told = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        for _ in range(20):
            values = optimizer.ask()
            assert values not in told
            told.append(values)
            optimizer.tell(values, *diverging(values))
    assert told[1]["lr"] < told[0]["lr"]
    assert sum(v["lr"] > 0.1 for v in told) <= 4
    pick = optimizer.estimate()
    assert diverging(pick)[0] < 0.5


def test_chaotic_hypergradient_is_ignored() -> None:
    """A finite run whose hypergradient is astronomically large (a chaotic run, Theorem 3)
    neither poisons the fit nor sends the proposal to the bounds."""
    optimizer = VectorGaussianProcess(PAIR)
    rng = np.random.default_rng(0)
    for i in range(8):
        values = optimizer.ask()
        a, b = math.log(values["lr"] / 0.03), math.log(values["wd"] / 0.01)
        grads = {"lr": 2 * a / values["lr"], "wd": 2 * b / values["wd"]}
        if i == 2:
            grads = {"lr": 1e200, "wd": -1e200}
        optimizer.tell(values, a * a + b * b + 0.01 * rng.standard_normal(), grads)
    proposal = optimizer.ask()
    assert all(np.isfinite(list(proposal.values())))
    assert 1e-4 < proposal["lr"] < 1.0 and 1e-4 < proposal["wd"] < 10.0


def test_partial_runs_are_not_picked() -> None:
    optimizer = VectorGaussianProcess(PAIR)
    first = optimizer.ask()
    optimizer.tell(first, 5.0, None)
    second = optimizer.ask()
    optimizer.tell(second, -100.0, None, partial=True)
    assert optimizer.estimate() == first


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: VectorGaussianProcess(SPACE, n_initial=0), "n_initial"),
        (lambda: VectorGaussianProcess(SPACE, n_initial=2.5), "n_initial"),
        (lambda: VectorGaussianProcess(SPACE, seed=-1), "seed"),
        (lambda: VectorGaussianProcess(SPACE, seed=True), "seed"),
        (lambda: VectorGaussianProcess(SPACE, start={"lr": 0.1}), "missing"),
    ],
)
def test_bad_input_raises_value_error(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_the_optimum_is_where_the_bowl_says() -> None:
    """Guard of the fixture the tests above rely on."""
    assert bowl(OPTIMUM)[0] == 0.0
