"""``HypergradSGD``: plain SGD that also tracks ``∂w/∂lr`` for a user's own loop.

Two lines of a standard PyTorch loop change::

    opt = HypergradSGD(model.parameters(), lr=0.1)        # was torch.optim.SGD
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=True)                  # was loss.backward()
        opt.step()
    val_loss = F.cross_entropy(model(x_val), y_val)
    d_val_d_lr = opt.hypergradient(val_loss)              # d val_loss / d lr

Each step applies ``w ← w − η g`` and the forward-mode recursion

    V ← V − g − η ∇²ℓ(w) V,        V = ∂w/∂η,

where the Hessian-vector product ``∇²ℓ(w) V`` is one extra backward pass through
the graph that ``backward(create_graph=True)`` kept (double backward). Cost: about
twice a plain SGD step; memory: one extra buffer per parameter (``V``), whatever
the number of steps. :meth:`HypergradSGD.hypergradient` then returns
``⟨∇M(w), V⟩`` for any meta-loss ``M`` computed from the current parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .._validation import check_step_size

__all__ = ["HypergradSGD"]


class HypergradSGD(torch.optim.Optimizer):
    """SGD whose step-size hypergradient is exact and costs one buffer per parameter.

    Args:
        params: Parameters or parameter groups (as for ``torch.optim.SGD``). All
            groups must share one ``lr``.
        lr: Step size ``η ≥ 0``.
        weight_decay: Must be 0 (accepted for signature compatibility).

    Raises:
        ValueError: for ``lr < 0`` or NaN, a non-zero ``weight_decay``, or groups
            with different step sizes.

    The tangent ``V = ∂w/∂η`` starts at 0 and covers every step since
    construction or :meth:`reset_hypergradient`. If ``lr`` is changed between
    steps, ``V`` is the derivative with respect to a shift added to the step size
    of every step (which is ``∂/∂η`` for a constant step size).
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, *, weight_decay: float = 0.0
    ) -> None:
        lr = check_step_size(lr, "lr")
        if weight_decay != 0.0:
            raise ValueError(f"weight_decay must be 0 for HypergradSGD; got {weight_decay!r}")
        super().__init__(params, {"lr": lr, "weight_decay": 0.0})
        self._check_groups()

    def _check_groups(self) -> float:
        rates = {float(group["lr"]) for group in self.param_groups}
        if len(rates) != 1:
            raise ValueError(
                f"all parameter groups must share one lr for HypergradSGD; got {sorted(rates)}"
            )
        for group in self.param_groups:
            if group.get("weight_decay", 0.0) != 0.0:
                raise ValueError("weight_decay must be 0 in every parameter group")
        return check_step_size(rates.pop(), "lr")

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One SGD step, updating the tangent ``∂w/∂lr`` with a Hessian-vector product.

        Raises:
            RuntimeError: when the gradients were computed by a plain
                ``loss.backward()``: call ``loss.backward(create_graph=True)``.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lr = self._check_groups()
        params = [p for p in self._params() if p.grad is not None]
        if not params:
            return loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # A gradient without a graph is constant in the parameters (its Hessian rows are 0)
        # when others have one; when none has, backward ran without create_graph=True.
        with_graph = [i for i, g in enumerate(grads) if g.requires_grad]
        if not with_graph:
            raise RuntimeError(
                "HypergradSGD needs the graph of the gradient: call "
                "loss.backward(create_graph=True) instead of loss.backward()"
            )
        tangents = [self._tangent(p) for p in params]
        active = [i for i in with_graph if bool(tangents[i].any())]
        hvps: list[Tensor | None] = [None] * len(params)
        if active:
            with torch.enable_grad():
                products = torch.autograd.grad(
                    [grads[i] for i in active],
                    params,
                    grad_outputs=[tangents[i] for i in active],
                    allow_unused=True,
                )
            hvps = list(products)
        for p, g, v, hv in zip(params, grads, tangents, hvps, strict=True):
            g_value = g.detach()
            v.sub_(g_value)
            if hv is not None:
                v.sub_(hv.detach(), alpha=lr)
            p.sub_(g_value, alpha=lr)
            # Drop the graph (and the parameter ↔ gradient reference cycle) at once.
            p.grad = g_value.clone()
        return loss

    def _tangent(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if "tangent" not in state:
            state["tangent"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        tangent: Tensor = state["tangent"]
        return tangent

    def hypergradient(self, meta_loss: Tensor) -> float:
        """``d meta_loss / d lr`` through every step since the last reset.

        Args:
            meta_loss: A scalar computed from the current parameters (a validation
                loss for train-by-validation, the training loss for train-by-train).

        Returns:
            The derivative ``⟨∇M(w), ∂w/∂lr⟩``.

        Raises:
            ValueError: when ``meta_loss`` is not a scalar tensor that depends on
                the parameters.
        """
        if not isinstance(meta_loss, Tensor) or meta_loss.numel() != 1:
            raise ValueError("meta_loss must be a scalar tensor computed from the parameters")
        if not meta_loss.requires_grad:
            raise ValueError(
                "meta_loss does not depend on the parameters (computed under no_grad?)"
            )
        params = self._params()
        with torch.enable_grad():
            grads = torch.autograd.grad(meta_loss, params, allow_unused=True)
        total = 0.0
        for p, g in zip(params, grads, strict=True):
            if g is None or "tangent" not in self.state[p]:
                continue
            total += float(torch.sum(g.detach() * self.state[p]["tangent"]))
        return total

    def reset_hypergradient(self) -> None:
        """Start a new unroll: set the tangent ``∂w/∂lr`` to 0."""
        for p in self._params():
            if "tangent" in self.state[p]:
                self.state[p]["tangent"].zero_()
