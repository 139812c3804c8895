"""l2l-tune: tune the step size of GD and SGD by meta-gradient descent.

Implements the learning-to-learn approach analysed in Wang, Yuan, Wu and Ge,
"Guarantees for Tuning the Step Size using a Learning-to-Learn Approach"
(ICML 2021): stable closed-form meta-gradients for the quadratic (Section 3) and
least-squares (Section 4) tasks, ask/tell meta-optimizers, a scikit-learn style
tuner, and grid/random baselines.
"""

from __future__ import annotations

from .baselines import GridSearch, RandomSearch
from .meta import (
    META_OPTIMIZERS,
    BracketingMetaOptimizer,
    LogAdamMetaOptimizer,
    MetaOptimizer,
    MetaRecord,
    ProjectedMetaGD,
    make_meta_optimizer,
)
from .tasks import LeastSquares, LeastSquaresBatch, LeastSquaresEvaluation, Quadratic
from .tuner import EvalRecord, HyperparameterTuner, StepSizeTuner

__version__ = "0.1.0"

__all__ = [
    "META_OPTIMIZERS",
    "BracketingMetaOptimizer",
    "EvalRecord",
    "HyperparameterTuner",
    "GridSearch",
    "LeastSquares",
    "LeastSquaresBatch",
    "LeastSquaresEvaluation",
    "LogAdamMetaOptimizer",
    "MetaOptimizer",
    "MetaRecord",
    "ProjectedMetaGD",
    "Quadratic",
    "RandomSearch",
    "StepSizeTuner",
    "__version__",
    "make_meta_optimizer",
]
