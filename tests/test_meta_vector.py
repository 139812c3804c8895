"""Meta-optimizers over several hyperparameters: Adam on log-hyperparameters, projected GD."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _helpers import OPTIMUM, SPACE, bowl

from l2l_tune.meta import (
    Hyperparameter,
    HyperparameterSpace,
    NonFiniteMetaGradientWarning,
    VectorLogAdam,
    VectorProjectedGD,
    VectorRecord,
)


def run(optimizer: VectorLogAdam | VectorProjectedGD, steps: int, noise: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        values = optimizer.ask()
        value, grads = bowl(values)
        noisy = {n: g * (1 + noise * rng.standard_normal()) for n, g in grads.items()}
        optimizer.tell(values, value, noisy)


@pytest.mark.parametrize("seed", range(5))
def test_log_adam_finds_the_bowl_with_noisy_gradients(seed: int) -> None:
    """Gradients with 50 % multiplicative noise: after 150 steps each hyperparameter is within
    a factor e^0.15 of the optimum (momentum within 0.05), on each of 5 seeds."""
    optimizer = VectorLogAdam(SPACE, start={"lr": 1e-3, "weight_decay": 1e-5, "momentum": 0.1})
    run(optimizer, 150, 0.5, seed)
    got = optimizer.estimate()
    assert abs(math.log(got["lr"] / OPTIMUM["lr"])) <= 0.15
    assert abs(math.log(got["weight_decay"] / OPTIMUM["weight_decay"])) <= 0.15
    assert abs(got["momentum"] - OPTIMUM["momentum"]) <= 0.05


def test_projected_gd_converges_on_exact_gradients() -> None:
    optimizer = VectorProjectedGD(SPACE, lr=0.5)
    run(optimizer, 300, 0.0, 0)
    got = optimizer.estimate()
    for name in ("lr", "weight_decay"):
        assert abs(math.log(got[name] / OPTIMUM[name])) <= 0.05
    assert abs(got["momentum"] - OPTIMUM["momentum"]) <= 0.01


def test_state_is_a_pure_function_of_the_history() -> None:
    optimizer = VectorLogAdam(SPACE, lr=0.3)
    run(optimizer, 12, 0.3, 1)
    records = [r.to_dict() for r in optimizer.history]
    rebuilt = VectorLogAdam.from_history(records, space=SPACE, lr=0.3)
    assert rebuilt.ask() == optimizer.ask()
    assert [r.values for r in rebuilt.history] == [r.values for r in optimizer.history]


def test_proposals_stay_in_bounds_and_a_diverged_run_goes_back() -> None:
    """A huge gradient pushes against the bounds (projected); a diverged run (inf value)
    sends the next proposal back to the last finite record's hyperparameters."""
    optimizer = VectorLogAdam(SPACE, lr=50.0)
    start = optimizer.ask()
    optimizer.tell(start, 1.0, {"lr": -1e30, "weight_decay": 1e30, "momentum": -1e30})
    pushed = optimizer.ask()
    assert pushed["lr"] == 1.0 and pushed["weight_decay"] == 1e-6 and pushed["momentum"] == 0.99
    with pytest.warns(NonFiniteMetaGradientWarning):
        optimizer.tell(pushed, math.inf, None)
    assert optimizer.ask() == pytest.approx(start, rel=1e-12)  # back to the last finite θ


def test_a_diverged_start_shrinks_the_log_scale_hyperparameters() -> None:
    """No finite point to go back to: lr and weight decay shrink by e^{lr/√k}, the linear
    momentum stays."""
    optimizer = VectorLogAdam(SPACE, lr=0.5)
    start = optimizer.ask()
    with pytest.warns(NonFiniteMetaGradientWarning):
        optimizer.tell(start, math.inf, None)
    after = optimizer.ask()
    assert after["lr"] == pytest.approx(start["lr"] * math.exp(-0.5), rel=1e-12)
    assert after["weight_decay"] == pytest.approx(start["weight_decay"] * math.exp(-0.5), rel=1e-12)
    assert after["momentum"] == pytest.approx(start["momentum"], rel=1e-12)


def test_value_only_records_are_kept_but_do_not_step() -> None:
    optimizer = VectorLogAdam(SPACE)
    first = optimizer.ask()
    optimizer.tell(first, 0.5, None)
    assert optimizer.ask() == first
    assert optimizer.best == VectorRecord(first, 0.5, None)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Hyperparameter("lr", 0.0, 1.0), "log-scale"),
        (lambda: Hyperparameter("lr", 1.0, 0.1), "low < high"),
        (lambda: Hyperparameter("", 0.1, 1.0), "name"),
        (lambda: HyperparameterSpace(()), "at least one"),
        (
            lambda: HyperparameterSpace((Hyperparameter("a", 1, 2), Hyperparameter("a", 1, 3))),
            "distinct",
        ),
        (lambda: VectorLogAdam(SPACE, lr=0.0), "lr"),
        (lambda: VectorLogAdam(SPACE, beta1=1.0), "beta1"),
        (lambda: VectorLogAdam(SPACE, start={"lr": 0.1}), "missing"),
        (lambda: VectorLogAdam(SPACE).tell({"lr": 0.1}, 1.0, None), "missing"),
        (
            lambda: VectorLogAdam(SPACE).tell(
                {"lr": 0.1, "weight_decay": 1e-3, "momentum": 0.5}, 1.0, {"lr": 1.0}
            ),
            "gradients must name",
        ),
    ],
)
def test_bad_input_raises_value_error(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build()  # type: ignore[operator]
