"""Shared fixtures for the l2l-tune test suite."""

from __future__ import annotations

from collections.abc import Iterator

import mpmath as mp
import pytest
from _helpers import DPS

from l2l_tune import LeastSquares, LeastSquaresBatch, Quadratic


@pytest.fixture(autouse=True)
def _mpmath_precision() -> None:
    """Every test sees mpmath at the reference precision (50 digits)."""
    mp.mp.dps = DPS


@pytest.fixture
def quad() -> Quadratic:
    """A "paper"-variant 20-dimensional instance (unit-norm w0)."""
    return Quadratic.random(20, 0)


@pytest.fixture
def fig1_quad() -> Quadratic:
    """The paper's Fig-1 setting as in the authors' code (L ≈ 60–70, η* ≈ 0.03 at t = 80)."""
    return Quadratic.random(20, 0, variant="authors")


@pytest.fixture
def ls_batch() -> LeastSquaresBatch:
    """A small batch with training and validation samples."""
    return LeastSquares(30, 1.0).sample(4, 20, 10, seed=0)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    """Optuna (when installed) logs only warnings during tests; failed trials still log."""
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is in the [test] extra
        yield
        return
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(previous)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Small networks only lose to PyTorch's threading overhead (~10× on 2 cores): one thread."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
