"""The paper's learned optimizer (Section 5): the MLP optimizer of Metz et al. (2019).

- :class:`MLPOptimizer`: a ``torch.optim.Optimizer`` that trains a network with
  learned meta-parameters (:class:`MetaParameters`, saved and loaded with
  ``torch.save``).
- :func:`learned_step`, :func:`features`, :func:`update_moments`: the same step as
  pure functions, differentiable in the meta-parameters.

Importing this package needs PyTorch (``pip install 'l2l-tune[torch]'``).
"""

from __future__ import annotations

from .optimizer import *  # noqa: F403 (the names of optimizer.__all__)
from .optimizer import __all__ as __all__
