"""Step-size hypergradients of a functional SGD run, for any PyTorch loss.

For ``t`` steps of SGD with a fixed sequence of mini-batches,

    w_{k+1} = w_k − η ∇ℓ(w_k; B_k),        k = 0, …, t − 1,

:func:`sgd_hypergradient` returns a meta-loss ``M(w_t)`` (say a validation loss)
and ``dM/dη`` by one of three methods:

- ``"forward"``: the tangent ``V_k = ∂w_k/∂η`` is carried along,
  ``V_{k+1} = V_k − ∇ℓ(w_k) − η ∇²ℓ(w_k) V_k``, the Hessian-vector product
  coming from ``torch.func.jvp`` of ``torch.func.grad`` (forward over reverse);
  ``dM/dη = ⟨∇M(w_t), V_t⟩``. Memory: two copies of the parameters, whatever ``t``.
- ``"backprop"``: autograd through the unrolled run (``create_graph=True`` at
  every step). Memory grows linearly with ``t``; for long runs at large ``η`` the
  backward pass overflows (paper, Section 3: the numerical issues of
  back-propagating through the trajectory). Kept as the contrast.
- ``"finite-difference"``: central differences of the meta-loss, for tests.

The parameters are any pytree of tensors accepted by ``torch.func`` (a dict from
``model.named_parameters()`` with :func:`torch.func.functional_call`, a tuple…).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from .._validation import check_choice, check_relative_step, check_step_size

__all__ = ["HYPERGRADIENT_METHODS", "Hypergradient", "sgd_hypergradient"]

#: Accepted values of ``method``.
HYPERGRADIENT_METHODS = ("forward", "backprop", "finite-difference")


@dataclass(frozen=True)
class Hypergradient:
    """A meta-loss after an SGD run and its derivative in the step size.

    Attributes:
        value: The meta-loss ``M(w_t)``.
        gradient: ``dM/dη``.
        params: The final parameters ``w_t`` (detached).
    """

    value: float
    gradient: float
    params: Any


def _sgd_run(
    loss_fn: Callable[[Any, Any], Tensor], params: Any, batches: Sequence[Any], lr: float
) -> Any:
    grad_fn = torch.func.grad(loss_fn)
    with torch.no_grad():
        for batch in batches:
            grads = grad_fn(params, batch)
            params = tree_map(lambda p, g: p - lr * g, params, grads)
    return params


def sgd_hypergradient(
    loss_fn: Callable[[Any, Any], Tensor],
    params: Any,
    batches: Iterable[Any],
    lr: float,
    meta_loss_fn: Callable[[Any], Tensor],
    *,
    method: str = "forward",
    fd_step: float | None = None,
) -> Hypergradient:
    """Run SGD on ``loss_fn`` and differentiate ``meta_loss_fn(w_t)`` in the step size.

    Args:
        loss_fn: ``loss_fn(params, batch)`` → scalar training loss (differentiable
            by ``torch.func``).
        params: Initial parameters ``w_0``: a pytree of floating tensors (not modified).
        batches: The ``t`` mini-batches, in order (a sequence, or an iterable
            materialised once; ``t ≥ 1``).
        lr: Step size ``η ≥ 0``.
        meta_loss_fn: ``meta_loss_fn(params)`` → scalar meta-loss (e.g. the loss
            on a validation set, or its log).
        method: ``"forward"``, ``"backprop"`` or ``"finite-difference"``.
        fd_step: Relative step ``h`` of the central difference at ``η(1 ± h)``;
            default ``√ε`` of the parameters' dtype (ReLU networks are piecewise
            smooth with kinks close together, so small steps are safer).

    Returns:
        The :class:`Hypergradient`.

    Raises:
        ValueError: for an unknown ``method``, ``lr < 0`` or NaN, no batches,
            parameters that are not floating tensors, an ``fd_step`` outside ``(0, 1)``,
            or ``lr = 0`` with finite differences.
    """
    check_choice(method, "method", HYPERGRADIENT_METHODS)
    lr = check_step_size(lr, "lr")
    if fd_step is not None:
        fd_step = check_relative_step(fd_step)
    batch_list = list(batches)
    if not batch_list:
        raise ValueError("batches must hold at least one mini-batch (t >= 1); got none")
    leaves, spec = tree_flatten(params)
    if not leaves or not all(isinstance(p, Tensor) and p.is_floating_point() for p in leaves):
        raise ValueError("params must be a non-empty pytree of floating-point tensors")
    params = tree_unflatten([p.detach() for p in leaves], spec)
    if method == "forward":
        return _forward(loss_fn, params, batch_list, lr, meta_loss_fn)
    if method == "backprop":
        return _backprop(loss_fn, params, batch_list, lr, meta_loss_fn)
    if lr == 0.0:
        raise ValueError("lr must be > 0 for method='finite-difference'")
    h = float(torch.finfo(leaves[0].dtype).eps) ** 0.5 if fd_step is None else fd_step
    with torch.no_grad():
        final = _sgd_run(loss_fn, params, batch_list, lr)
        plus = float(meta_loss_fn(_sgd_run(loss_fn, params, batch_list, lr * (1 + h))))
        minus = float(meta_loss_fn(_sgd_run(loss_fn, params, batch_list, lr * (1 - h))))
        value = float(meta_loss_fn(final))
    return Hypergradient(value, (plus - minus) / (2 * lr * h), final)


def _forward(
    loss_fn: Callable[[Any, Any], Tensor],
    params: Any,
    batches: list[Any],
    lr: float,
    meta_loss_fn: Callable[[Any], Tensor],
) -> Hypergradient:
    grad_fn = torch.func.grad(loss_fn)
    tangent = tree_map(torch.zeros_like, params)
    with torch.no_grad():
        for batch in batches:
            pair = torch.func.jvp(lambda p: grad_fn(p, batch), (params,), (tangent,))  # noqa: B023
            grads, hvp = pair[0], pair[1]
            params = tree_map(lambda p, g: p - lr * g, params, grads)
            tangent = tree_map(lambda v, g, hv: v - g - lr * hv, tangent, grads, hvp)
        pair = torch.func.jvp(meta_loss_fn, (params,), (tangent,))
        value, derivative = pair[0], pair[1]
    return Hypergradient(float(value), float(derivative), params)


def _backprop(
    loss_fn: Callable[[Any, Any], Tensor],
    params: Any,
    batches: list[Any],
    lr: float,
    meta_loss_fn: Callable[[Any], Tensor],
) -> Hypergradient:
    leaves, spec = tree_flatten(params)
    eta = torch.tensor(lr, dtype=leaves[0].dtype, device=leaves[0].device, requires_grad=True)
    current = [p.clone().requires_grad_(True) for p in leaves]
    for batch in batches:
        loss = loss_fn(tree_unflatten(current, spec), batch)
        grads = torch.autograd.grad(loss, current, create_graph=True, allow_unused=True)
        current = [p if g is None else p - eta * g for p, g in zip(current, grads, strict=True)]
    meta = meta_loss_fn(tree_unflatten(current, spec))
    (derivative,) = torch.autograd.grad(meta, eta)
    final = tree_unflatten([p.detach() for p in current], spec)
    return Hypergradient(float(meta.detach()), float(derivative), final)
