"""Hypergradients of PyTorch training loops: step sizes, momentum, weight decay, Adam's betas.

- :class:`HypergradSGD`, :class:`HypergradAdam`, :class:`HypergradAdamW`: drop-in
  ``torch.optim`` optimizers for a user's own loop, whose
  :meth:`~HypergradOptimizer.hypergradients` returns ``{name: d meta_loss / dh}``.
- :func:`hypergradients`: any functional loss and update rule, forward mode (memory
  independent of the number of steps), reverse mode through the unrolled run, or
  central finite differences; :func:`sgd_hypergradient` is its plain-SGD,
  step-size-only case.
- :mod:`~l2l_tune.hypergrad.rules`: the update rules as pure functions (one copy of
  each inner recursion); :mod:`~l2l_tune.hypergrad.tangent`: their forward-mode
  tangents (one copy of the hypergradient recursion).
- :mod:`~l2l_tune.hypergrad.mlp`: batched ReLU perceptrons with hand-derived
  Hessian-vector products, the engine of :class:`~l2l_tune.tasks.MNIST`.

Importing this package needs PyTorch (``pip install 'l2l-tune[torch]'``).
"""

from __future__ import annotations

from . import mlp, rules, tangent
from .functional import (
    HYPERGRADIENT_METHODS,
    Hypergradient,
    Hypergradients,
    hypergradients,
    sgd_hypergradient,
)
from .optimizer import HypergradAdam, HypergradAdamW, HypergradOptimizer, HypergradSGD

__all__ = [
    "HYPERGRADIENT_METHODS",
    "HypergradAdam",
    "HypergradAdamW",
    "HypergradOptimizer",
    "HypergradSGD",
    "Hypergradient",
    "Hypergradients",
    "hypergradients",
    "mlp",
    "rules",
    "sgd_hypergradient",
    "tangent",
]
