"""The paper's learned optimizer (Section 5): the MLP optimizer of Metz et al. (2019).

- :class:`MLPOptimizer`: a ``torch.optim.Optimizer`` that trains a network with
  learned meta-parameters (:class:`MetaParameters`, saved and loaded with
  ``torch.save``).
- :func:`learned_step`, :func:`features`, :func:`update_moments`: the same step as
  pure functions, differentiable in the meta-parameters.
- :func:`run_truncation`: one truncation of meta-training (truncated backprop,
  first order as the paper, or second order), on batched perceptrons;
  :func:`meta_train` with the paper's schedule (RMSProp, random truncations),
  train-by-train or train-by-validation.

Importing this package needs PyTorch (``pip install 'l2l-tune[torch]'``).
"""

from __future__ import annotations

from . import optimizer, training, truncation
from .optimizer import *  # noqa: F403 (the names of optimizer.__all__)
from .training import *  # noqa: F403 (the names of training.__all__)
from .truncation import *  # noqa: F403 (the names of truncation.__all__)

__all__ = [*optimizer.__all__, *training.__all__, *truncation.__all__]
