"""One truncation of the MLP optimizer's meta-training: its meta-objective and meta-gradient.

The paper (Section 5, following Metz et al. 2019) meta-trains the MLP optimizer by
truncated backpropagation: a trajectory of the inner problem is cut into
truncations; on each, the meta-objective is the mean over the unroll of the
full-batch cross entropy on the meta-set (the training subset for train-by-train,
the validation subset for train-by-validation) at the parameters *before* each
step, differentiated in the meta-parameters; the parameters and optimizer state
are carried to the next truncation without gradient.

``order="first"`` is the authors' choice: the inner gradients ``∇ℓ(θ_k)`` enter the
optimizer as constants (no Hessian term); the meta-gradient still follows ``θ_k``
through the optimizer's updates and features. ``order="second"`` differentiates
through the inner gradients too (the full derivative of the truncation's
meta-objective). The inner problems are the batched perceptrons of
:mod:`l2l_tune.hypergrad.mlp` (``m`` problems stacked, each normalised on its own by
the optimizer's features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_choice
from ..hypergrad import mlp
from .optimizer import LearnedState, MetaParameters, init_state, learned_step

__all__ = ["ORDERS", "Truncation", "init_states", "run_truncation"]

#: Meta-gradient variants.
ORDERS = ("first", "second")


@dataclass(frozen=True)
class Truncation:
    """The result of one truncation.

    Attributes:
        meta_loss: The mean meta-set loss over the unroll and the problems (a scalar
            tensor carrying the graph to the meta-parameters).
        params: The problems' parameters after the truncation (detached).
        states: The optimizer's states after it (detached).
        finite: Whether every loss and parameter stayed finite (an unroll that turns
            non-finite stops there; its meta-loss covers the finite steps only).
    """

    meta_loss: Tensor
    params: list[Tensor]
    states: list[LearnedState]
    finite: bool


def init_states(params: Sequence[Tensor]) -> list[LearnedState]:
    """Zero optimizer states for stacked parameters ``(m, ...)``."""
    return [init_state(p) for p in params]


def _detached(state: LearnedState) -> LearnedState:
    return LearnedState(state.m.detach(), state.r.detach(), state.step)


def run_truncation(
    meta: MetaParameters,
    params: Sequence[Tensor],
    states: Sequence[LearnedState],
    batches: Sequence[tuple[Tensor, Tensor]],
    meta_set: tuple[Tensor, Tensor],
    *,
    order: str = "first",
) -> Truncation:
    """Unroll the MLP optimizer over ``batches`` and form the truncation's meta-objective.

    Args:
        meta: The meta-parameters (leaves with ``requires_grad`` to differentiate).
        params: The ``m`` problems' stacked parameters (:data:`l2l_tune.hypergrad.mlp.Params`),
            the truncation's start (treated as constants).
        states: The optimizer's state of each parameter tensor at the start.
        batches: ``(x, y)`` per step, ``x`` of shape ``(m, B, d_0)``, ``y`` ``(m, B)``.
        meta_set: ``(x, y)`` of the meta-set, ``(m, N, d_0)`` and ``(m, N)``.
        order: ``"first"`` (inner gradients as constants, the paper's) or ``"second"``.

    Returns:
        The :class:`Truncation`.

    Raises:
        ValueError: for an unknown ``order``, no batches, or states that do not match
            the parameters.
    """
    check_choice(order, "order", ORDERS)
    if not batches:
        raise ValueError("batches must hold at least one step")
    if len(states) != len(params):
        raise ValueError(f"states must match params: {len(states)} states, {len(params)} tensors")
    current = [p.detach().requires_grad_(order == "second") for p in params]
    current_states = [_detached(s) for s in states]
    meta_x, meta_y = meta_set
    terms: list[Tensor] = []
    finite = True
    for x, y in batches:
        term = mlp.loss(current, meta_x, meta_y).mean()
        if not torch.isfinite(term):
            finite = False
            break
        terms.append(term)
        if order == "first":
            _, grads = mlp.loss_and_gradient([p.detach() for p in current], x, y)
        else:
            inner = mlp.loss(current, x, y).sum()
            grads = list(torch.autograd.grad(inner, current, create_graph=True))
        stepped = [
            learned_step(meta, p, g, s, batch_dims=1)
            for p, g, s in zip(current, grads, current_states, strict=True)
        ]
        new_params = [p for p, _ in stepped]
        if not all(bool(torch.isfinite(p).all()) for p in new_params):
            finite = False
            break
        current = new_params
        current_states = [s for _, s in stepped]
    meta_loss = torch.stack(terms).mean() if terms else torch.zeros((), dtype=params[0].dtype)
    return Truncation(
        meta_loss,
        [p.detach() for p in current],
        [_detached(s) for s in current_states],
        finite,
    )
