"""Bad input fails loudly: ValueError naming the offending argument."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from l2l_tune import (
    GridSearch,
    LeastSquares,
    LeastSquaresBatch,
    Quadratic,
    RandomSearch,
    StepSizeTuner,
)
from l2l_tune._validation import (
    check_array,
    check_choice,
    check_horizon,
    check_positive,
    check_step_size,
)

BAD_ETAS = [-1e-3, -math.inf, math.nan, math.inf, "0.1", None, True]
BAD_HORIZONS = [0, -3, 1.5, True, math.nan, math.inf, "80", None]


@pytest.fixture(scope="module")
def quadratic() -> Quadratic:
    """A small instance."""
    return Quadratic.random(5, 0)


@pytest.fixture(scope="module")
def batch_train_only() -> LeastSquaresBatch:
    """A least-squares batch without validation samples."""
    return LeastSquares(6, 1.0).sample(2, 8, 0, seed=0)


@pytest.fixture(scope="module")
def batch() -> LeastSquaresBatch:
    """A least-squares batch with validation samples."""
    return LeastSquares(6, 1.0).sample(2, 8, 4, seed=0)


# ---------------------------------------------------------------------- η and t
@pytest.mark.parametrize("eta", BAD_ETAS)
def test_bad_eta_everywhere(eta: Any, quadratic: Quadratic, batch: LeastSquaresBatch) -> None:
    """η < 0, NaN, ±inf or a non-number is rejected naming eta, by every entry point."""
    calls: list[Callable[[], Any]] = [
        lambda: quadratic.meta_objective(eta, 10),
        lambda: quadratic.meta_gradient(eta, 10),
        lambda: quadratic.meta_gradient(eta, 10, method="backprop"),
        lambda: quadratic.value_and_gradient(eta, 10, log=False),
        lambda: quadratic.iterate(eta, 10),
        lambda: batch.value_and_gradient(eta, 10),
        lambda: batch.meta_gradient(eta, 10, split="valid"),
        lambda: batch.truncated(eta, 10),
        lambda: batch.evaluate(eta, 10),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="eta"):
            call()


@pytest.mark.parametrize("t", BAD_HORIZONS)
def test_bad_horizon_everywhere(t: Any, quadratic: Quadratic, batch: LeastSquaresBatch) -> None:
    """t = 0, negative, non-integral, bool, NaN/inf or a non-number is rejected naming t."""
    calls: list[Callable[[], Any]] = [
        lambda: quadratic.meta_objective(0.01, t),
        lambda: quadratic.meta_gradient(0.01, t, method="backprop"),
        lambda: quadratic.optimal_step_size(t),
        lambda: batch.value_and_gradient(0.01, t),
        lambda: batch.truncated(0.01, t),
        lambda: StepSizeTuner().fit(quadratic, t),
        lambda: GridSearch().fit(quadratic, t),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"\bt\b"):
            call()


def test_integral_float_horizon_accepted(quadratic: Quadratic) -> None:
    """t = 80.0 and numpy integers are accepted as 80."""
    expected = quadratic.meta_objective(0.01, 80)
    assert quadratic.meta_objective(0.01, 80.0) == expected
    assert quadratic.meta_objective(0.01, np.int64(80)) == expected
    assert quadratic.meta_objective(np.float64(0.01), 80) == expected


# ---------------------------------------------------------------------- Quadratic construction
@pytest.mark.parametrize(
    ("H", "w0", "match"),
    [
        (np.array([[2.0, 1.0], [0.0, 2.0]]), [1.0, 1.0], r"\bH\b.*symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), [1.0, 1.0], r"\bH\b.*positive definite"),
        (np.array([[1.0, 0.0], [0.0, 0.0]]), [1.0, 1.0], r"\bH\b.*positive definite"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), [1.0, 1.0], r"\bH\b.*finite"),
        (np.array([[1.0, np.inf], [np.inf, 1.0]]), [1.0, 1.0], "H"),
        (np.ones((2, 3)), [1.0, 1.0], r"\bH\b.*square"),
        (np.ones(3), [1.0, 1.0, 1.0], r"\bH\b.*dimensions"),
        (np.zeros((0, 0)), [], r"\bH\b.*empty"),
        (np.eye(2), [1.0, 1.0, 1.0], r"\bw0\b.*length"),
        (np.eye(2), [0.0, 0.0], r"\bw0\b.*nonzero"),
        (np.eye(2), [1.0, np.nan], r"\bw0\b.*finite"),
        (np.eye(2), [[1.0, 1.0]], r"\bw0\b.*dimensions"),
        (np.eye(2), ["a", "b"], r"\bw0\b"),
    ],
)
def test_quadratic_rejects_bad_matrix_or_start(H: Any, w0: Any, match: str) -> None:
    """Non-symmetric, indefinite, non-finite or misshapen H, and bad w0, raise ValueError."""
    with pytest.raises(ValueError, match=match):
        Quadratic(H, w0)


def test_quadratic_random_rejects_bad_arguments() -> None:
    """Quadratic.random: unknown variant and d < 1 raise ValueError naming them."""
    with pytest.raises(ValueError, match="variant"):
        Quadratic.random(5, 0, variant="tensorflow")
    with pytest.raises(ValueError, match="d must"):
        Quadratic.random(0, 0)


def test_quadratic_rejects_bad_options(quadratic: Quadratic) -> None:
    """Unknown method, split (including "valid") and dtype raise ValueError naming them."""
    with pytest.raises(ValueError, match="method"):
        quadratic.meta_gradient(0.01, 5, method="finite-difference")
    for split in ("valid", "test", None):
        with pytest.raises(ValueError, match="split"):
            quadratic.meta_objective(0.01, 5, split=split)
        with pytest.raises(ValueError, match="split"):
            quadratic.meta_gradient(0.01, 5, split=split, method="backprop")
    for dtype in ("float16", "int64", np.float64, None):
        with pytest.raises(ValueError, match="dtype"):
            quadratic.meta_gradient(0.01, 5, method="backprop", dtype=dtype)


# ---------------------------------------------------------------------- least squares
def test_least_squares_rejects_bad_construction() -> None:
    """sigma ≤ 0 / NaN / inf and d < 1 raise ValueError naming them; sample checks m and n."""
    for sigma in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma"):
            LeastSquares(5, sigma)
    with pytest.raises(ValueError, match="d must"):
        LeastSquares(0)
    ls = LeastSquares(5)
    with pytest.raises(ValueError, match="m must"):
        ls.sample(0, 10)
    with pytest.raises(ValueError, match="n_train"):
        ls.sample(2, 0)
    with pytest.raises(ValueError, match="n_valid"):
        ls.sample(2, 10, -1)
    with pytest.raises(ValueError, match="n_train"):
        ls.evaluate(0.1, 5, n_train=0)


def test_valid_split_needs_validation_data(
    batch_train_only: LeastSquaresBatch, batch: LeastSquaresBatch
) -> None:
    """split="valid" without validation samples, or an unknown split, raises naming split."""
    with pytest.raises(ValueError, match="split"):
        batch_train_only.value_and_gradient(0.01, 5, split="valid")
    with pytest.raises(ValueError, match="split"):
        batch_train_only.meta_objective(0.01, 5, split="valid")
    with pytest.raises(ValueError, match="split"):
        batch.value_and_gradient(0.01, 5, split="test")
    with pytest.raises(ValueError, match="split"):
        StepSizeTuner().fit(batch_train_only, 5, split="valid")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"X": [[1.0, np.nan]] * 3, "y": [1.0, 2.0, 3.0]}, r"^X\b.*finite"),
        ({"X": np.ones((3, 2)), "y": [1.0, np.inf, 3.0]}, r"^y\b.*finite"),
        ({"X": np.ones((3, 2)), "y": [1.0, 2.0]}, r"^y\b"),
        ({"X": np.ones((2, 3, 2)), "y": np.ones((2, 4))}, r"^y\b"),
        ({"X": np.ones((2, 3, 2)), "y": np.ones(3)}, r"^y\b.*dimensions"),
        ({"X": np.ones(3), "y": np.ones(3)}, r"^X\b.*dimensions"),
        (
            {"X": np.ones((3, 2)), "y": np.ones(3), "X_valid": np.ones((2, 2))},
            "X_valid and y_valid",
        ),
        ({"X": np.ones((3, 2)), "y": np.ones(3), "y_valid": np.ones(2)}, "X_valid and y_valid"),
        (
            {
                "X": np.ones((3, 2)),
                "y": np.ones(3),
                "X_valid": np.ones((2, 5)),
                "y_valid": np.ones(2),
            },
            "X_valid",
        ),
        (
            {
                "X": np.ones((3, 2)),
                "y": np.ones(3),
                "X_valid": np.ones((2, 2)),
                "y_valid": np.ones(3),
            },
            "y_valid",
        ),
        (
            {
                "X": np.ones((3, 2)),
                "y": np.ones(3),
                "X_valid": [[np.nan, 1.0]],
                "y_valid": np.ones(1),
            },
            r"^X_valid\b.*finite",
        ),
        ({"X": np.ones((3, 2)), "y": np.ones(3), "w_star": np.ones(3)}, "w_star"),
        ({"X": np.ones((3, 2)), "y": np.ones(3), "sigma": 0.0}, "sigma"),
        ({"X": np.ones((3, 2)), "y": np.ones(3), "sigma": -2.0}, "sigma"),
    ],
)
def test_from_data_rejects_bad_input(kwargs: dict[str, Any], match: str) -> None:
    """from_data: NaN/inf, bad shapes, X_valid without y_valid, sigma ≤ 0 raise naming them."""
    with pytest.raises(ValueError, match=match):
        LeastSquares.from_data(**kwargs)


# ---------------------------------------------------------------------- tuner and baselines
@pytest.mark.parametrize(
    ("search", "match"),
    [
        (GridSearch(low=1.0, high=0.5), "high must be > low"),
        (GridSearch(low=0.1, high=0.1), "high must be > low"),
        (GridSearch(low=-1.0), "low"),
        (GridSearch(low=0.0), "low"),
        (GridSearch(high=math.inf), "high"),
        (GridSearch(n_points=0), "n_points"),
        (GridSearch(grid=[]), "grid"),
        (GridSearch(grid=[0.1, -0.1]), "grid"),
        (GridSearch(grid=[0.1, math.nan]), "grid"),
        (RandomSearch(low=0.5, high=0.1), "high must be > low"),
        (RandomSearch(low=math.nan), "low"),
        (RandomSearch(n_evals=0), "n_evals"),
    ],
)
def test_search_rejects_bad_configuration(search: Any, quadratic: Quadratic, match: str) -> None:
    """GridSearch/RandomSearch check their bounds, counts and grid at fit, naming the argument."""
    with pytest.raises(ValueError, match=match):
        search.fit(quadratic, 10)


@pytest.mark.parametrize(
    ("tuner", "match"),
    [
        (StepSizeTuner(meta_optimizer="nelder-mead"), "meta_optimizer"),
        (StepSizeTuner(meta_optimizer=42), "meta_optimizer"),
        (StepSizeTuner(max_evals=0), "max_evals"),
        (StepSizeTuner(max_evals=2.5), "max_evals"),
        (StepSizeTuner(tol=0.0), "tol"),
        (StepSizeTuner(eta0=-0.1), "eta0"),
        (StepSizeTuner(eta0=math.nan), "eta0"),
    ],
)
def test_tuner_rejects_bad_configuration(
    tuner: StepSizeTuner, quadratic: Quadratic, match: str
) -> None:
    """StepSizeTuner validates its arguments at fit, naming them."""
    with pytest.raises(ValueError, match=match):
        tuner.fit(quadratic, 10)


@pytest.mark.parametrize("task", [object(), "quadratic", np.eye(3), None])
def test_fit_rejects_non_task(task: Any) -> None:
    """StepSizeTuner and the baselines reject objects without the MetaObjectiveTask methods."""
    for fitter in (StepSizeTuner(), GridSearch(), RandomSearch(seed=0)):
        with pytest.raises(ValueError, match="task"):
            fitter.fit(task, 10)


def test_fit_rejects_bad_split(quadratic: Quadratic) -> None:
    """fit with an unknown split raises naming split."""
    for fitter in (StepSizeTuner(), GridSearch(), RandomSearch(seed=0)):
        with pytest.raises(ValueError, match="split"):
            fitter.fit(quadratic, 10, split="test")


# ---------------------------------------------------------------------- the checks themselves
def test_check_helpers() -> None:
    """The shared checks return normalised values and name the argument in their messages."""
    assert check_step_size(0) == 0.0 and isinstance(check_step_size(np.float32(0.5)), float)
    assert check_positive(math.inf, "x", allow_inf=True) == math.inf
    with pytest.raises(ValueError, match="x must"):
        check_positive(math.inf, "x")
    assert check_horizon(np.int32(3)) == 3 and check_horizon(7.0) == 7
    assert check_choice("a", "opt", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="opt must be one of 'a', 'b'"):
        check_choice("c", "opt", ("a", "b"))
    out = check_array([[1, 2], [3, 4]], "A", ndim=(2,))
    assert out.dtype == np.float64 and out.shape == (2, 2)
