"""Inner update rules as pure functions of (parameters, gradients, state, hyperparameters).

One rule is one optax-style ``update``: it maps the parameters ``w_k``, their
gradients ``g_k = ∇ℓ(w_k; B_k)``, the optimizer's state ``s_k`` and the
hyperparameters ``h`` to ``(w_{k+1}, s_{k+1})``, without side effects. Every
hypergradient of the library comes from this one function:

- forward mode (:mod:`~l2l_tune.hypergrad.tangent`) carries ``∂(w, s)/∂h`` with
  ``torch.func.jvp`` of the rule, the gradient's tangent being the Hessian-vector
  product ``∇²ℓ(w) ∂w/∂h`` (the chain rule of the paper's Eqn 2 for a general rule);
- reverse mode unrolls the same function with ``h`` as tensors that require grad;
- finite differences run it at perturbed ``h``.

With Python-float hyperparameters a rule performs exactly the operations of
``torch.optim``'s single-tensor implementation (so :class:`~l2l_tune.hypergrad.HypergradSGD`
and :class:`~l2l_tune.hypergrad.HypergradAdam` reproduce ``torch.optim.SGD`` and
``torch.optim.Adam`` to the last bit on CPU); with tensor hyperparameters it performs the
same arithmetic with differentiable operations.

Structural choices (Nesterov, AMSGrad, decoupled weight decay, maximise) are
constructor arguments; continuous ones are hyperparameters, passed at every call.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

__all__ = [
    "SCHEDULE_DECAYS",
    "SGD",
    "Adam",
    "AdamW",
    "Hyperparameters",
    "Scheduled",
    "UpdateRule",
    "groups_of",
    "update_groups",
]

#: One hyperparameter's value: a Python float (the exact ``torch.optim`` arithmetic)
#: or a 0-d tensor (differentiable).
Scalar = float | Tensor
#: The hyperparameters of one call, by name.
Hyperparameters = Mapping[str, Scalar]
#: The state of one parameter tensor: a tuple of tensors shaped like it.
TensorState = tuple[Tensor, ...]


def _add_scaled(x: Tensor, y: Tensor, alpha: Scalar) -> Tensor:
    """``x + α·y``: ``torch.add(..., alpha=α)`` for a float, as ``torch.optim`` does."""
    if isinstance(alpha, Tensor):
        return x + alpha * y
    return torch.add(x, y, alpha=alpha)


def _sqrt(x: Tensor, differentiable: bool) -> Tensor:
    """``√x`` for ``x ≥ 0``; when differentiated, with a zero derivative where ``x = 0``.

    Adam's second moment is exactly 0 for an element whose gradient has always been 0
    (an input pixel that is 0 in every image): there ``d√x = dx/(2√x)`` is ``0/0``
    and forward and reverse mode alike would return NaN although ``x`` (and its
    tangent) stay 0. The values are ``torch.sqrt``'s, bit for bit.
    """
    if not differentiable and not _is_differentiated(x):
        return x.sqrt()
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0)


def _is_differentiated(x: Tensor) -> bool:
    """Whether ``x`` carries a forward-mode tangent or is recorded by autograd."""
    return x.requires_grad or fwAD.unpack_dual(x).tangent is not None


def _is_zero(value: Scalar) -> bool:
    return not isinstance(value, Tensor) and value == 0.0


class UpdateRule:
    """An inner optimizer as a pure function (the base of every rule).

    Subclasses set :attr:`hyperparameters` (the continuous, differentiable names,
    with their ``torch.optim`` defaults) and implement :meth:`init_one` and
    :meth:`update_one` for one parameter tensor.
    """

    #: Continuous hyperparameters and their defaults.
    hyperparameters: Mapping[str, float] = {}
    #: Whether the update of each element depends only on that element (SGD, Adam):
    #: then the tangents of all tensors may go through the rule concatenated.
    elementwise: bool = True
    #: Accepted range ``[low, high)`` of each hyperparameter (``high`` included when infinite).
    bounds: Mapping[str, tuple[float, float]] = {}

    def init_one(self, param: Tensor) -> TensorState:
        """The state of one parameter tensor before its first step."""
        raise NotImplementedError

    def update_one(
        self, param: Tensor, grad: Tensor, state: TensorState, hparams: Hyperparameters, step: int
    ) -> tuple[Tensor, TensorState]:
        """One step of one parameter tensor.

        Args:
            param: ``w_k``.
            grad: ``∇ℓ(w_k)``.
            state: The tensor's state ``s_k`` (:meth:`init_one` before the first step).
            hparams: Every name of :attr:`hyperparameters`.
            step: How many steps this tensor has taken before (0 on the first).

        Returns:
            ``(w_{k+1}, s_{k+1})``.
        """
        raise NotImplementedError

    def init(self, params: Sequence[Tensor]) -> list[TensorState]:
        """The state of every tensor of ``params``."""
        return [self.init_one(p) for p in params]

    def update(
        self,
        params: Sequence[Tensor],
        grads: Sequence[Tensor],
        states: Sequence[TensorState],
        hparams: Hyperparameters,
        steps: Sequence[int],
    ) -> tuple[list[Tensor], list[TensorState]]:
        """:meth:`update_one` over a list of tensors sharing ``hparams``."""
        new_params: list[Tensor] = []
        new_states: list[TensorState] = []
        for p, g, s, k in zip(params, grads, states, steps, strict=True):
            p_next, s_next = self.update_one(p, g, s, hparams, k)
            new_params.append(p_next)
            new_states.append(s_next)
        return new_params, new_states

    def check_hyperparameters(
        self, hparams: Mapping[str, Any], where: str = ""
    ) -> dict[str, float]:
        """Every hyperparameter as a float, defaults filled in, after checking its range.

        Args:
            hparams: Values by name (a subset of :attr:`hyperparameters`).
            where: Context for the error message (say ``"param_groups[1]"``).

        Raises:
            ValueError: for an unknown name, or a value that is not a finite real
                number in the hyperparameter's range.
        """
        out = self.defaults(**{k: v for k, v in hparams.items() if k in self.hyperparameters})
        unknown = sorted(set(hparams) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown}{' in ' + where if where else ''} for "
                f"{type(self).__name__}; accepted: {sorted(self.hyperparameters)}"
            )
        for name, value in out.items():
            low, high = self.bounds.get(name, (-math.inf, math.inf))
            inside = low <= value < high if math.isfinite(high) else low <= value
            if not math.isfinite(value) or not inside:
                closing = ")" if math.isfinite(high) else "]"
                raise ValueError(
                    f"{name}{' in ' + where if where else ''} must be a finite number in "
                    f"[{low:g}, {high:g}{closing}; got {value!r}"
                )
        return out

    def check_differentiable(self, names: Sequence[str]) -> None:
        """Check that each of ``names`` moves the update (a hyperparameter of this rule).

        Raises:
            ValueError: for a name this rule does not have or does not use.
        """
        unknown = sorted(set(names) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"hypergradients_of names {unknown}, not hyperparameters of "
                f"{type(self).__name__}; accepted: {sorted(self.hyperparameters)}"
            )

    def defaults(self, **overrides: Any) -> dict[str, float]:
        """The hyperparameters with ``overrides`` applied.

        Raises:
            ValueError: for a name that is not a hyperparameter of this rule.
        """
        unknown = sorted(set(overrides) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for {type(self).__name__}; "
                f"accepted: {sorted(self.hyperparameters)}"
            )
        values = dict(self.hyperparameters)
        for name, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a real number; got {value!r}")
            values[name] = float(value)
        return values


class SGD(UpdateRule):
    """``torch.optim.SGD``: weight decay, momentum with dampening, Nesterov.

    ``d = g + λw``; with a momentum buffer ``b ← μb + (1 − τ)d`` (``b = d`` on the
    first step) and ``d ← d + μb`` (Nesterov) or ``d ← b``; ``w ← w − ηd``.

    Args:
        momentum_buffer: Keep the buffer. ``torch.optim.SGD`` keeps it when
            ``momentum ≠ 0``; keep it also to differentiate in ``momentum`` at 0
            (with ``dampening = 0`` the values are identical).
        nesterov: Nesterov momentum.
        maximize: Ascend instead of descend.
    """

    hyperparameters: Mapping[str, float] = {
        "lr": 1e-3,
        "momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
    }
    bounds: Mapping[str, tuple[float, float]] = {
        "lr": (0.0, math.inf),
        "momentum": (0.0, math.inf),
        "dampening": (-math.inf, math.inf),
        "weight_decay": (0.0, math.inf),
    }

    def __init__(
        self, *, momentum_buffer: bool = False, nesterov: bool = False, maximize: bool = False
    ) -> None:
        self.momentum_buffer = bool(momentum_buffer or nesterov)
        self.nesterov = bool(nesterov)
        self.maximize = bool(maximize)

    def check_differentiable(self, names: Sequence[str]) -> None:
        super().check_differentiable(names)
        unused = sorted({"momentum", "dampening"} & set(names))
        if unused and not self.momentum_buffer:
            raise ValueError(
                f"hypergradients_of names {unused}, which SGD without a momentum buffer does "
                "not use: construct the rule with momentum_buffer=True (an MNIST task: "
                "optimizer='momentum')"
            )

    def check_hyperparameters(
        self, hparams: Mapping[str, Any], where: str = ""
    ) -> dict[str, float]:
        """As :meth:`UpdateRule.check_hyperparameters`, with ``torch.optim.SGD``'s two rules.

        Raises:
            ValueError: also for ``momentum ≠ 0`` without a momentum buffer (it would be
                ignored; ``torch.optim.SGD`` keeps a buffer whenever ``momentum ≠ 0``), and
                for Nesterov momentum with ``momentum ≤ 0``. (``torch.optim.SGD`` also
                refuses Nesterov with ``dampening ≠ 0``; the rule accepts it, so that a run
                can be differentiated in ``dampening`` at 0 and checked by finite
                differences there.)
        """
        out = super().check_hyperparameters(hparams, where)
        at = f" in {where}" if where else ""
        if not self.momentum_buffer and out["momentum"] != 0.0:
            raise ValueError(
                f"momentum{at} is {out['momentum']:g}, which SGD without a momentum buffer "
                "would ignore: construct SGD(momentum_buffer=True) (an MNIST task: "
                "optimizer='momentum')"
            )
        if self.nesterov and out["momentum"] <= 0.0:
            raise ValueError(
                f"Nesterov momentum{at} needs momentum > 0 (as torch.optim.SGD); got "
                f"momentum={out['momentum']:g}"
            )
        return out

    def init_one(self, param: Tensor) -> TensorState:
        return (torch.zeros_like(param),) if self.momentum_buffer else ()

    def update_one(
        self, param: Tensor, grad: Tensor, state: TensorState, hparams: Hyperparameters, step: int
    ) -> tuple[Tensor, TensorState]:
        d = -grad if self.maximize else grad
        weight_decay = hparams["weight_decay"]
        if not _is_zero(weight_decay):
            d = _add_scaled(d, param, weight_decay)
        new_state: TensorState = ()
        if self.momentum_buffer:
            momentum = hparams["momentum"]
            if step == 0:
                buf = d.clone()
            else:
                buf = _add_scaled(state[0] * momentum, d, 1 - hparams["dampening"])
            d = _add_scaled(d, buf, momentum) if self.nesterov else buf
            new_state = (buf,)
        return _add_scaled(param, d, -hparams["lr"]), new_state


class Adam(UpdateRule):
    """``torch.optim.Adam`` (and AdamW with ``decoupled_weight_decay=True``).

    ``k ← k + 1``; coupled decay ``g ← g + λw`` or decoupled ``w ← w(1 − ηλ)``;
    ``m ← m + (1 − β₁)(g − m)``, ``v ← β₂v + (1 − β₂)g²`` (AMSGrad: ``v̂ = max(v̂, v)``);
    ``w ← w − η/(1 − β₁ᵏ) · m / (√v / √(1 − β₂ᵏ) + ε)``.

    Args:
        decoupled_weight_decay: AdamW's decay.
        amsgrad: Keep the running maximum of ``v``.
        maximize: Ascend instead of descend.
    """

    hyperparameters: Mapping[str, float] = {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    bounds: Mapping[str, tuple[float, float]] = {
        "lr": (0.0, math.inf),
        "beta1": (0.0, 1.0),
        "beta2": (0.0, 1.0),
        "eps": (0.0, math.inf),
        "weight_decay": (0.0, math.inf),
    }

    def __init__(
        self,
        *,
        decoupled_weight_decay: bool = False,
        amsgrad: bool = False,
        maximize: bool = False,
    ) -> None:
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.amsgrad = bool(amsgrad)
        self.maximize = bool(maximize)

    def init_one(self, param: Tensor) -> TensorState:
        zeros = torch.zeros_like(param)
        return (zeros, zeros.clone(), zeros.clone()) if self.amsgrad else (zeros, zeros.clone())

    def update_one(
        self, param: Tensor, grad: Tensor, state: TensorState, hparams: Hyperparameters, step: int
    ) -> tuple[Tensor, TensorState]:
        g = -grad if self.maximize else grad
        lr, beta1, beta2 = hparams["lr"], hparams["beta1"], hparams["beta2"]
        eps, weight_decay = hparams["eps"], hparams["weight_decay"]
        count = step + 1
        differentiable = any(isinstance(value, Tensor) for value in hparams.values())
        if not _is_zero(weight_decay):
            if self.decoupled_weight_decay:
                param = param * (1 - lr * weight_decay)
            else:
                g = _add_scaled(g, param, weight_decay)
        exp_avg = torch.lerp(state[0], g, 1 - beta1)
        if isinstance(beta2, Tensor):
            exp_avg_sq = state[1] * beta2 + (1 - beta2) * (g * g)
        else:
            exp_avg_sq = torch.addcmul(state[1] * beta2, g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**count
        bias_correction2_sqrt = (1 - beta2**count) ** 0.5
        step_size = lr / bias_correction1
        if self.amsgrad:
            max_exp_avg_sq = torch.maximum(state[2], exp_avg_sq)
            denom = _sqrt(max_exp_avg_sq, differentiable) / bias_correction2_sqrt + eps
            new_state: TensorState = (exp_avg, exp_avg_sq, max_exp_avg_sq)
        else:
            denom = _sqrt(exp_avg_sq, differentiable) / bias_correction2_sqrt + eps
            new_state = (exp_avg, exp_avg_sq)
        if isinstance(step_size, Tensor):
            return param - step_size * (exp_avg / denom), new_state
        return torch.addcdiv(param, exp_avg, denom, value=-step_size), new_state


class AdamW(Adam):
    """``torch.optim.AdamW``: :class:`Adam` with decoupled weight decay (default 0.01)."""

    hyperparameters: Mapping[str, float] = {**Adam.hyperparameters, "weight_decay": 1e-2}

    def __init__(self, *, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(decoupled_weight_decay=True, amsgrad=amsgrad, maximize=maximize)


def groups_of(
    rule: UpdateRule | Sequence[UpdateRule], group_of: Sequence[int], n_groups: int
) -> Iterator[tuple[int, list[int], UpdateRule]]:
    """``(group, indices of its tensors, its rule)`` for every group that has tensors."""
    for group in range(n_groups):
        index = [i for i, g in enumerate(group_of) if g == group]
        if index:
            yield group, index, rule if isinstance(rule, UpdateRule) else rule[group]


def update_groups(
    rule: UpdateRule | Sequence[UpdateRule],
    group_of: Sequence[int],
    group_hparams: Sequence[Hyperparameters],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[TensorState],
    steps: Sequence[int],
) -> tuple[list[Tensor], list[TensorState]]:
    """One step of every tensor, each parameter group with its own hyperparameters.

    Args:
        rule: The rule of every group, or one per group.
        group_of: The group of each tensor.
        group_hparams: Each group's hyperparameters (floats, or tensors to differentiate).
        params: ``w_k``, grads: ``∇ℓ(w_k)``, states: the rule's state, steps: the
            previous steps, one entry per tensor.

    Returns:
        ``(w_{k+1}, s_{k+1})`` in the order of ``params``.
    """
    new_params = list(params)
    new_states = list(states)
    for group, index, group_rule in groups_of(rule, group_of, len(group_hparams)):
        stepped, stepped_states = group_rule.update(
            [params[i] for i in index],
            [grads[i] for i in index],
            [states[i] for i in index],
            group_hparams[group],
            [steps[i] for i in index],
        )
        for i, p, s in zip(index, stepped, stepped_states, strict=True):
            new_params[i], new_states[i] = p, s
    return new_params, new_states


#: The decays of :class:`Scheduled`.
SCHEDULE_DECAYS = ("cosine", "linear", "exponential")


class Scheduled(UpdateRule):
    """An update rule whose step size follows a schedule with continuous parameters.

    Over ``horizon`` steps the step size of step ``k`` (0-based) is ``lr · s(k)``: a linear
    warmup to ``lr`` over the first ``W = warmup_fraction · horizon`` steps,
    ``s(k) = min(1, (k + 1)/W)``, then a decay to ``final_fraction · lr`` at the horizon,
    with progress ``p = clip((k − W)/(horizon − W), 0, 1)``: cosine
    ``f + (1 − f)(1 + cos πp)/2``, linear ``1 − (1 − f)p`` or exponential ``f^p``. Both
    fractions are hyperparameters like ``lr``, so a run is differentiable in them (the
    warmup is piecewise smooth in ``warmup_fraction``: kinks where ``W`` crosses a step).
    With the defaults (no warmup, ``final_fraction = 1``) the schedule is constant and
    the rule is the inner one. With float hyperparameters the step size is
    ``lr · s(k)`` in Python floats, as ``torch.optim.lr_scheduler.LambdaLR`` computes it.

    Args:
        rule: The inner rule (:class:`SGD`, :class:`Adam`, :class:`AdamW`).
        horizon: The number of steps the schedule spans, ``≥ 1``.
        decay: ``"cosine"``, ``"linear"`` or ``"exponential"``.

    Raises:
        ValueError: for a rule that is not an :class:`UpdateRule`, ``horizon < 1`` or an
            unknown ``decay``.
    """

    def __init__(self, rule: UpdateRule, horizon: int, *, decay: str = "cosine") -> None:
        if not isinstance(rule, UpdateRule) or isinstance(rule, Scheduled):
            raise ValueError(f"rule must be an unscheduled UpdateRule, got {rule!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if decay not in SCHEDULE_DECAYS:
            raise ValueError(f"decay must be one of {SCHEDULE_DECAYS}, got {decay!r}")
        self.rule, self.horizon, self.decay = rule, horizon, decay
        self.elementwise = rule.elementwise
        self.hyperparameters = {
            **rule.hyperparameters,
            "warmup_fraction": 0.0,
            "final_fraction": 1.0,
        }
        low = 1e-300 if decay == "exponential" else 0.0
        self.bounds = {
            **rule.bounds,
            "warmup_fraction": (0.0, 1.0),
            "final_fraction": (low, math.inf),
        }

    def factor(self, step: int, warmup_fraction: Scalar, final_fraction: Scalar) -> Scalar:
        """``s(step)``: a float for float fractions, a differentiable tensor otherwise."""
        w, f = warmup_fraction, final_fraction
        if not isinstance(w, Tensor) and not isinstance(f, Tensor):
            warm = float(w) * self.horizon
            ramp: Scalar = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
            progress: Scalar = min(max((step - warm) / (self.horizon - warm), 0.0), 1.0)
            return ramp * self._decayed(progress, float(f), math.cos)
        like = w if isinstance(w, Tensor) else f
        assert isinstance(like, Tensor)
        w_t = torch.as_tensor(w, dtype=like.dtype, device=like.device)
        f_t = torch.as_tensor(f, dtype=like.dtype, device=like.device)
        warm_t = w_t * self.horizon
        ramp = torch.where(
            warm_t > 0, torch.clamp((step + 1) / torch.clamp(warm_t, min=1e-30), max=1.0), 1.0
        )
        progress = torch.clamp((step - warm_t) / (self.horizon - warm_t), 0.0, 1.0)
        return ramp * self._decayed(progress, f_t, torch.cos)

    def _decayed(self, progress: Any, final: Any, cos: Any) -> Any:
        """The decay at ``progress ∈ [0, 1]`` (floats and ``math.cos``, or tensors)."""
        if self.decay == "cosine":
            return final + (1 - final) * 0.5 * (1 + cos(math.pi * progress))
        if self.decay == "linear":
            return 1 - (1 - final) * progress
        return final**progress

    def check_differentiable(self, names: Sequence[str]) -> None:
        inner = [n for n in names if n not in ("warmup_fraction", "final_fraction")]
        unknown = sorted(set(names) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"hypergradients_of names {unknown}, not hyperparameters of the scheduled "
                f"{type(self.rule).__name__}; accepted: {sorted(self.hyperparameters)}"
            )
        self.rule.check_differentiable(inner)

    def check_hyperparameters(
        self, hparams: Mapping[str, Any], where: str = ""
    ) -> dict[str, float]:
        """The inner rule's checks (SGD's momentum rules among them) and the fractions' ranges."""
        out = super().check_hyperparameters(hparams, where)
        self.rule.check_hyperparameters(
            {k: v for k, v in out.items() if k in self.rule.hyperparameters}, where
        )
        return out

    def init_one(self, param: Tensor) -> TensorState:
        return self.rule.init_one(param)

    def update_one(
        self, param: Tensor, grad: Tensor, state: TensorState, hparams: Hyperparameters, step: int
    ) -> tuple[Tensor, TensorState]:
        inner = {k: v for k, v in hparams.items() if k in self.rule.hyperparameters}
        inner["lr"] = hparams["lr"] * self.factor(
            step, hparams["warmup_fraction"], hparams["final_fraction"]
        )
        return self.rule.update_one(param, grad, state, inner, step)
