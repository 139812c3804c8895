"""Step-size hypergradients of SGD in PyTorch.

- :class:`HypergradSGD`: a ``torch.optim.Optimizer`` for a user's own loop, whose
  :meth:`~HypergradSGD.hypergradient` returns ``d meta_loss / d lr``.
- :func:`sgd_hypergradient`: any functional loss, forward mode (memory independent
  of the number of steps), reverse mode through the unrolled run, or central
  finite differences.
- :mod:`~l2l_tune.hypergrad.mlp`: batched ReLU perceptrons with hand-derived
  Hessian-vector products, the engine of :class:`~l2l_tune.tasks.MNIST`.

Importing this package needs PyTorch (``pip install 'l2l-tune[torch]'``).
"""

from __future__ import annotations

from . import mlp
from .functional import HYPERGRADIENT_METHODS, Hypergradient, sgd_hypergradient
from .optimizer import HypergradSGD

__all__ = [
    "HYPERGRADIENT_METHODS",
    "HypergradSGD",
    "Hypergradient",
    "mlp",
    "sgd_hypergradient",
]
