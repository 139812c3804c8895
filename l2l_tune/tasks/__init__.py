"""Inner problems whose meta-objective is differentiated in the step size."""

from __future__ import annotations

from .base import SPLITS, HyperparameterTask, MetaObjectiveTask, is_exact_task
from .least_squares import (
    TRUNCATION_RADIUS,
    LeastSquares,
    LeastSquaresBatch,
    LeastSquaresEvaluation,
)
from .mnist import INNER_OPTIMIZERS, MNIST, MNISTBatch, MNISTEvaluation
from .quadratic import Quadratic

__all__ = [
    "SPLITS",
    "TRUNCATION_RADIUS",
    "HyperparameterTask",
    "LeastSquares",
    "LeastSquaresBatch",
    "LeastSquaresEvaluation",
    "MNIST",
    "MNISTBatch",
    "MNISTEvaluation",
    "MetaObjectiveTask",
    "INNER_OPTIMIZERS",
    "Quadratic",
    "is_exact_task",
]
