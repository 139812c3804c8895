"""Drop-in ``torch.optim`` optimizers that also track ``∂w/∂h`` for a user's own loop.

Two lines of a standard PyTorch loop change::

    opt = HypergradAdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)  # was torch.optim.AdamW
    for x, y in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=True)                   # was loss.backward()
        opt.step()
    val_loss = F.cross_entropy(model(x_val), y_val)
    opt.hypergradients(val_loss)     # {"lr": d val_loss/d lr, "weight_decay": ...}

Each step applies the rule of :mod:`~l2l_tune.hypergrad.rules` (the same arithmetic
as ``torch.optim``'s single-tensor implementation, so the weights equal those of
the ``torch.optim`` class to the last bit on CPU) and the forward-mode recursion of
:func:`~l2l_tune.hypergrad.tangent.tangent_step` for each hyperparameter named in
``hypergradients_of``. The Hessian-vector product ``∇²ℓ(w)V`` of each is one extra
backward pass through the graph that ``backward(create_graph=True)`` kept (double
backward). Cost: about ``1 + k`` plain steps for ``k`` hyperparameters; memory: one
copy of the parameters and the optimizer state per hyperparameter, whatever the
number of steps.

Parameter groups: a hyperparameter whose value is the same in every group has one
hypergradient; one whose value differs (per-layer step sizes) has one per group,
returned as a list in group order.

Parameters without a gradient at a step (the loss did not use them) are skipped, as
``torch.optim`` skips them, and keep their own step count; their coupling to the
others through the Hessian is zero at that step. A gradient deleted by hand while
the loss used the parameter drops that coupling too, so the hypergradient is then
the derivative of a run that differs from the one trained.

Schedules: when a ``torch.optim.lr_scheduler`` drives ``lr`` (it records
``initial_lr`` in every group), the ``lr`` hypergradient is the derivative in the
base step size that scales the whole schedule (``∂η_k/∂η = η_k/η``). Without a
scheduler, a step size changed by hand between steps makes it the derivative in a
shift added to every step's step size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .rules import SGD, Adam, AdamW, TensorState, UpdateRule
from .tangent import (
    Direction,
    TangentState,
    directions_for,
    gradients_by_name,
    tangent_step,
    zero_tangents,
)

__all__ = ["HypergradAdam", "HypergradAdamW", "HypergradOptimizer", "HypergradSGD"]


class HypergradOptimizer(torch.optim.Optimizer):
    """The base of the drop-in optimizers: an update rule plus its tangents.

    Subclasses say how a parameter group maps to a rule (:meth:`_rule_for`) and to
    the rule's hyperparameters (:meth:`_hparams_for`), and what the rule's state
    tensors are called in ``self.state`` (:attr:`_state_names`, ``torch.optim``'s
    names).
    """

    _state_names: tuple[str, ...] = ()

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        hypergradients_of: Sequence[str] | None,
    ) -> None:
        super().__init__(params, defaults)
        if isinstance(hypergradients_of, str):
            hypergradients_of = (hypergradients_of,)
        self._names: tuple[str, ...] = tuple(
            self._default_names() if hypergradients_of is None else hypergradients_of
        )
        self._directions: list[Direction] | None = None
        self._check_groups()

    # ---------------------------------------------------------------- subclass hooks
    def _default_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _rule_for(self, group: dict[str, Any]) -> UpdateRule:
        raise NotImplementedError

    def _hparams_for(self, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # ---------------------------------------------------------------- the machinery
    @property
    def hypergradient_names(self) -> tuple[str, ...]:
        """The hyperparameters whose hypergradients are tracked."""
        return self._names

    def _check_groups(self) -> tuple[list[UpdateRule], list[dict[str, float]], list[Direction]]:
        rules: list[UpdateRule] = []
        values: list[dict[str, float]] = []
        for index, group in enumerate(self.param_groups):
            rule = self._rule_for(group)
            rule.check_differentiable(self._names)
            rules.append(rule)
            values.append(
                rule.check_hyperparameters(self._hparams_for(group), f"param_groups[{index}]")
            )
        directions = directions_for(self._names, values)
        if self._directions is not None and directions != self._directions:
            raise ValueError(
                "the parameter groups' hyperparameters changed from shared to per-group (or "
                "back) since the tangents started; call reset_hypergradients() first"
            )
        return rules, values, directions

    def _state_of(self, p: Tensor, rule: UpdateRule) -> TensorState:
        state = self.state[p]
        if "step" not in state:
            init = rule.init_one(p)
            state["step"] = torch.tensor(0.0)
            for name, tensor in zip(self._state_names, init, strict=False):
                state[name] = tensor
        return tuple(state[name] for name in self._state_names if name in state)

    def _tangents_of(self, p: Tensor, state: TensorState, n: int) -> TangentState:
        stored = self.state[p].get("tangents")
        if stored is None or stored[0].shape[0] != n:
            stored = zero_tangents([p], [state], n)[0]
            self.state[p]["tangents"] = stored
        tangent: TangentState = stored
        return tangent

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step of the rule, updating the tangent of every tracked hyperparameter.

        Raises:
            RuntimeError: when the gradients were computed by a plain
                ``loss.backward()``: call ``loss.backward(create_graph=True)``.
            ValueError: for a hyperparameter set out of its range since construction,
                or per-group values that appeared after the tangents started.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rules, values, directions = self._check_groups()
        params: list[Tensor] = []
        group_of: list[int] = []
        for index, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.requires_grad and p.grad is not None:
                    params.append(p)
                    group_of.append(index)
        if not params:
            return loss
        grads = [p.grad for p in params]
        # A gradient without a graph is constant in the parameters (its Hessian rows are 0)
        # when others have one; when none has, backward ran without create_graph=True.
        with_graph = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        if not with_graph:
            raise RuntimeError(
                f"{type(self).__name__} needs the graph of the gradient: call "
                "loss.backward(create_graph=True) instead of loss.backward()"
            )
        self._directions = directions
        states = [self._state_of(p, rules[g]) for p, g in zip(params, group_of, strict=True)]
        tangents = [
            self._tangents_of(p, s, len(directions)) for p, s in zip(params, states, strict=True)
        ]
        hvps = self._hessian_vector_products(params, grads, with_graph, tangents)
        seed_scale = [
            {"lr": float(group["lr"]) / float(group["initial_lr"])}
            if float(group.get("initial_lr", 0.0)) > 0.0
            else {}
            for group in self.param_groups
        ]
        plain_grads = [g.detach() for g in grads if g is not None]
        steps = [int(self.state[p]["step"]) for p in params]
        new_params, new_states, new_tangents = tangent_step(
            rules,
            group_of,
            values,
            [p.detach() for p in params],
            plain_grads,
            states,
            steps,
            directions,
            tangents,
            hvps,
            seed_scale,
        )
        for i, p in enumerate(params):
            p.copy_(new_params[i])
            state = self.state[p]
            state["step"] += 1
            for name, tensor in zip(self._state_names, new_states[i], strict=False):
                state[name] = tensor
            state["tangents"] = new_tangents[i]
            # Drop the graph (and the parameter ↔ gradient reference cycle) at once.
            p.grad = plain_grads[i].clone()
        return loss

    def _hessian_vector_products(
        self,
        params: list[Tensor],
        grads: list[Tensor | None],
        with_graph: list[int],
        tangents: list[TangentState],
    ) -> list[Tensor]:
        """``∇²ℓ(w)V`` of the stacked directions: one batched double backward.

        ``torch.autograd.grad(..., is_grads_batched=True)`` (``vmap`` over the
        directions); a model whose backward ``vmap`` cannot batch falls back to one
        double backward per direction.
        """
        outputs: list[Tensor] = [g for i in with_graph if (g := grads[i]) is not None]
        vectors = [tangents[i][0] for i in with_graph]
        if not any(bool(v.any()) for v in vectors):
            return [torch.zeros_like(t[0]) for t in tangents]
        n_dir = vectors[0].shape[0]
        products: Sequence[Tensor | None]
        with torch.enable_grad():
            if n_dir == 1:
                single = torch.autograd.grad(
                    outputs, params, grad_outputs=[v[0] for v in vectors], allow_unused=True
                )
                products = [None if x is None else x.unsqueeze(0) for x in single]
            else:
                try:
                    products = torch.autograd.grad(
                        outputs,
                        params,
                        grad_outputs=vectors,
                        allow_unused=True,
                        retain_graph=True,
                        is_grads_batched=True,
                    )
                except RuntimeError:
                    parts = [
                        torch.autograd.grad(
                            outputs,
                            params,
                            grad_outputs=[v[j] for v in vectors],
                            allow_unused=True,
                            retain_graph=True,
                        )
                        for j in range(n_dir)
                    ]
                    products = [
                        None if column[0] is None else torch.stack(column)
                        for column in zip(*parts, strict=True)
                    ]
        return [
            torch.zeros_like(t[0]) if hv is None else hv.detach()
            for t, hv in zip(tangents, products, strict=True)
        ]

    def hypergradients(self, meta_loss: Tensor) -> dict[str, float | list[float]]:
        """``d meta_loss / dh`` for every tracked hyperparameter, through every step since
        construction or the last :meth:`reset_hypergradients`.

        Args:
            meta_loss: A scalar computed from the current parameters (a validation
                loss for train-by-validation, the training loss for train-by-train).

        Returns:
            ``{name: derivative}``; a list with one entry per parameter group for a
            hyperparameter whose value differs between groups. All 0 before a step.

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
        _, values, directions = self._check_groups()
        directions = self._directions if self._directions is not None else directions
        params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        with torch.enable_grad():
            grads = torch.autograd.grad(meta_loss, params, allow_unused=True)
        totals = torch.zeros(len(directions), dtype=torch.float64)
        for p, g in zip(params, grads, strict=True):
            stored = self.state[p].get("tangents") if p in self.state else None
            if g is None or stored is None:
                continue
            products = (g.detach().unsqueeze(0) * stored[0]).flatten(1).sum(1)
            totals += products.to(device="cpu", dtype=torch.float64)
        return gradients_by_name(directions, totals.tolist())

    def hypergradient(self, meta_loss: Tensor) -> float:
        """``d meta_loss / d lr`` (one step size shared by every group).

        Raises:
            ValueError: when ``lr`` is not tracked or differs between groups (use
                :meth:`hypergradients`), or for a bad ``meta_loss``.
        """
        if "lr" not in self._names:
            raise ValueError(f"lr is not in hypergradients_of {self._names}")
        value = self.hypergradients(meta_loss)["lr"]
        if isinstance(value, list):
            raise ValueError(
                "lr differs between parameter groups: use hypergradients(meta_loss)['lr'], "
                "one derivative per group"
            )
        return value

    def reset_hypergradients(self) -> None:
        """Start a new unroll: set every tangent to 0 (the optimizer state is kept)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    self.state[p].pop("tangents", None)
        self._directions = None

    reset_hypergradient = reset_hypergradients


class HypergradSGD(HypergradOptimizer):
    """``torch.optim.SGD`` whose hypergradients are exact (forward mode, flat memory).

    Args:
        params: Parameters or parameter groups (as for ``torch.optim.SGD``; groups may
            have their own hyperparameters).
        lr: Step size ``η ≥ 0``.
        momentum: Momentum factor ``μ ≥ 0``.
        dampening: Dampening ``τ`` of the momentum.
        weight_decay: L2 penalty ``λ ≥ 0``.
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``).
        maximize: Ascend instead of descend.
        hypergradients_of: The hyperparameters to differentiate in, among ``"lr"``,
            ``"momentum"``, ``"dampening"``, ``"weight_decay"``; default ``"lr"`` and
            each of ``"momentum"`` and ``"weight_decay"`` set non-zero.

    Raises:
        ValueError: for a hyperparameter out of its range (``lr``, ``momentum``,
            ``weight_decay`` < 0 or not finite), Nesterov without momentum or with
            dampening, or an unknown name in ``hypergradients_of``.
    """

    _state_names = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        hypergradients_of: Sequence[str] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults, hypergradients_of)

    def _default_names(self) -> tuple[str, ...]:
        names = ["lr"]
        for name in ("momentum", "weight_decay"):
            if any(float(group.get(name, 0.0)) != 0.0 for group in self.param_groups):
                names.append(name)
        return tuple(names)

    def _rule_for(self, group: dict[str, Any]) -> UpdateRule:
        nesterov = bool(group.get("nesterov", False))
        if nesterov and (float(group["momentum"]) <= 0 or float(group["dampening"]) != 0):
            raise ValueError("nesterov=True requires a momentum > 0 and zero dampening")
        momentum_buffer = float(group["momentum"]) != 0.0 or bool(
            {"momentum", "dampening"} & set(self._names)
        )
        return SGD(
            momentum_buffer=momentum_buffer,
            nesterov=nesterov,
            maximize=bool(group.get("maximize", False)),
        )

    def _hparams_for(self, group: dict[str, Any]) -> dict[str, Any]:
        return {name: group[name] for name in ("lr", "momentum", "dampening", "weight_decay")}


class HypergradAdam(HypergradOptimizer):
    """``torch.optim.Adam`` whose hypergradients are exact (forward mode, flat memory).

    Args:
        params: Parameters or parameter groups (as for ``torch.optim.Adam``).
        lr: Step size ``η ≥ 0``.
        betas: ``(β₁, β₂)``, each in ``[0, 1)``.
        eps: ``ε ≥ 0`` added to the denominator.
        weight_decay: L2 penalty ``λ ≥ 0`` added to the gradient (default 0;
            :class:`HypergradAdamW` decouples it, default 0.01).
        amsgrad: Use the running maximum of the second moment.
        maximize: Ascend instead of descend.
        hypergradients_of: Among ``"lr"``, ``"beta1"``, ``"beta2"``, ``"eps"``,
            ``"weight_decay"``; default ``"lr"`` and ``"weight_decay"`` when it is set
            non-zero.

    Raises:
        ValueError: for a hyperparameter out of its range or an unknown name in
            ``hypergradients_of``.
    """

    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _rule_class: type[Adam] = Adam

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        hypergradients_of: Sequence[str] | None = None,
    ) -> None:
        if weight_decay is None:
            weight_decay = self._rule_class.hyperparameters["weight_decay"]
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
        }
        super().__init__(params, defaults, hypergradients_of)

    def _default_names(self) -> tuple[str, ...]:
        if any(float(group.get("weight_decay", 0.0)) != 0.0 for group in self.param_groups):
            return ("lr", "weight_decay")
        return ("lr",)

    def _rule_for(self, group: dict[str, Any]) -> UpdateRule:
        amsgrad, maximize = bool(group.get("amsgrad", False)), bool(group.get("maximize", False))
        if self._rule_class is AdamW:
            return AdamW(amsgrad=amsgrad, maximize=maximize)
        return Adam(amsgrad=amsgrad, maximize=maximize)

    def _hparams_for(self, group: dict[str, Any]) -> dict[str, Any]:
        betas = group["betas"]
        if not isinstance(betas, Sequence) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
        return {
            "lr": group["lr"],
            "beta1": betas[0],
            "beta2": betas[1],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
        }


class HypergradAdamW(HypergradAdam):
    """``torch.optim.AdamW`` (decoupled weight decay, default 0.01) with exact hypergradients.

    Arguments as :class:`HypergradAdam`; ``weight_decay`` defaults to 0.01, so
    ``hypergradients_of`` defaults to ``("lr", "weight_decay")``.
    """

    _rule_class = AdamW
