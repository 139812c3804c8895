"""Hypergradients of a functional training run, for any PyTorch loss and update rule.

For ``t`` steps of an update rule ``U`` (:mod:`~l2l_tune.hypergrad.rules`: SGD with
momentum, Nesterov and weight decay, Adam, AdamW) on a fixed sequence of mini-batches,

    (w_{k+1}, s_{k+1}) = U(w_k, ∇ℓ(w_k; B_k), s_k, h),        k = 0, …, t − 1,

:func:`hypergradients` returns a meta-loss ``M(w_t)`` (say a validation loss) and
``dM/dh`` for the named hyperparameters ``h`` by one of three methods:

- ``"forward"``: the tangents ``∂(w_k, s_k)/∂h`` are carried along by
  :func:`~l2l_tune.hypergrad.tangent.tangent_step` (the Jacobian-vector product of
  the rule), the Hessian-vector product coming from ``torch.func.jvp`` of
  ``torch.func.grad`` (forward over reverse); ``dM/dh = ⟨∇M(w_t), ∂w_t/∂h⟩``.
  Memory: one copy of the parameters and the state per hyperparameter, whatever ``t``.
- ``"backprop"``: autograd through the unrolled run (``create_graph=True`` at
  every step). Memory grows linearly with ``t``; for long runs at large ``η`` the
  backward pass overflows (paper, Section 3: the numerical issues of
  back-propagating through the trajectory). Its cost does not grow with the number
  of hyperparameters: it is the choice for many of them on short runs.
- ``"finite-difference"``: central differences of the meta-loss, for tests.

:func:`sgd_hypergradient` is the scalar special case (plain SGD, ``d/dη``).

The parameters are any pytree of tensors accepted by ``torch.func`` (a dict from
``model.named_parameters()`` with :func:`torch.func.functional_call`, a tuple…).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._validation import check_choice, check_horizon, check_relative_step, check_step_size
from .rules import SGD, TensorState, UpdateRule, update_groups
from .tangent import (
    Direction,
    TangentState,
    directions_for,
    gradients_by_name,
    tangent_step,
    zero_tangents,
)

__all__ = [
    "HYPERGRADIENT_METHODS",
    "Hypergradient",
    "Hypergradients",
    "hypergradients",
    "sgd_hypergradient",
]

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


@dataclass(frozen=True)
class Hypergradients:
    """A meta-loss after a run and its derivatives in the named hyperparameters.

    Attributes:
        value: The meta-loss ``M(w_t)``.
        gradients: ``{name: dM/dh}``; a list with one entry per parameter group for
            a hyperparameter whose value differs between groups.
        params: The final parameters ``w_t`` (detached).
    """

    value: float
    gradients: dict[str, float | list[float]]
    params: Any


@dataclass(frozen=True)
class _Run:
    """A validated run: the flat parameters, their groups and each group's values."""

    leaves: list[Tensor]
    spec: Any
    group_of: list[int]
    group_hparams: list[dict[str, float]]
    directions: list[Direction]
    batches: list[Any]


def _group_values(
    rule: UpdateRule, hparams: Mapping[str, Any], n_groups: int
) -> list[dict[str, float]]:
    per_group: list[dict[str, Any]] = [{} for _ in range(n_groups)]
    for name, value in hparams.items():
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != n_groups:
                raise ValueError(
                    f"hparams[{name!r}] has {len(value)} values; groups names {n_groups} "
                    "parameter group(s)"
                )
            for group, item in enumerate(value):
                per_group[group][name] = item
        else:
            for group in range(n_groups):
                per_group[group][name] = value
    return [
        rule.check_hyperparameters(values, f"hparams (group {group})")
        for group, values in enumerate(per_group)
    ]


def _prepare(
    rule: UpdateRule,
    params: Any,
    batches: Iterable[Any],
    hparams: Mapping[str, Any],
    hypergradients_of: Sequence[str],
    groups: Sequence[int] | None,
) -> _Run:
    if not isinstance(rule, UpdateRule):
        raise ValueError(f"rule must be an UpdateRule (SGD(), Adam(), ...); got {rule!r}")
    if isinstance(hypergradients_of, str):
        hypergradients_of = (hypergradients_of,)
    rule.check_differentiable(list(hypergradients_of))
    batch_list = list(batches)
    if not batch_list:
        raise ValueError("batches must hold at least one mini-batch (t >= 1); got none")
    leaves, spec = tree_flatten(params)
    if not leaves or not all(isinstance(p, Tensor) and p.is_floating_point() for p in leaves):
        raise ValueError("params must be a non-empty pytree of floating-point tensors")
    if groups is None:
        group_of = [0] * len(leaves)
    else:
        group_of = [int(g) for g in groups]
        if len(group_of) != len(leaves) or min(group_of) < 0:
            raise ValueError(
                f"groups must give a group index >= 0 for each of the {len(leaves)} parameter "
                f"tensors; got {list(groups)!r}"
            )
    n_groups = max(group_of) + 1
    group_hparams = _group_values(rule, hparams, n_groups)
    directions = directions_for(list(hypergradients_of), group_hparams)
    return _Run([p.detach() for p in leaves], spec, group_of, group_hparams, directions, batch_list)


def hypergradients(
    loss_fn: Callable[[Any, Any], Tensor],
    params: Any,
    batches: Iterable[Any],
    meta_loss_fn: Callable[[Any], Tensor],
    *,
    rule: UpdateRule | None = None,
    hparams: Mapping[str, float | Sequence[float]] | None = None,
    hypergradients_of: Sequence[str] = ("lr",),
    groups: Sequence[int] | None = None,
    method: str = "forward",
    fd_step: float | None = None,
    checkpoint_every: int | None = None,
) -> Hypergradients:
    """Train with ``rule`` on ``loss_fn`` and differentiate ``meta_loss_fn(w_t)`` in ``h``.

    Args:
        loss_fn: ``loss_fn(params, batch)`` → scalar training loss (differentiable
            by ``torch.func``).
        params: Initial parameters ``w_0``: a pytree of floating tensors (not modified).
        batches: The ``t`` mini-batches, in order (``t ≥ 1``).
        meta_loss_fn: ``meta_loss_fn(params)`` → scalar meta-loss (e.g. the loss
            on a validation set, or its log).
        rule: The update rule (default ``SGD()``); its hyperparameters not given in
            ``hparams`` take ``torch.optim``'s defaults.
        hparams: Values by name; a sequence gives one value per parameter group.
        hypergradients_of: The names to differentiate in.
        groups: The parameter group of each tensor of ``params`` (in
            ``tree_flatten`` order; default: one group).
        method: ``"forward"``, ``"backprop"`` or ``"finite-difference"``.
        fd_step: Relative step ``ε`` of the central difference at ``h(1 ± ε)``
            (absolute where ``h = 0``); default ``√ε`` of the parameters' dtype.
        checkpoint_every: With ``method="backprop"``, keep the graph of only
            ``checkpoint_every`` steps at a time and recompute each segment during the
            backward pass (``torch.utils.checkpoint``): memory ``O(t/c + c)`` graphs of
            one step instead of ``O(t)``, for one more forward pass. ``None``: keep all.

    Returns:
        The :class:`Hypergradients`.

    Raises:
        ValueError: for an unknown ``method`` or hyperparameter, a value out of its
            range, no batches, parameters that are not floating tensors, ``groups``
            that do not match ``params``, a per-group sequence of the wrong length, an
            ``fd_step`` outside ``(0, 1)``, or a ``checkpoint_every`` that is not an
            integer ``≥ 1`` (or is given without ``method="backprop"``).
    """
    check_choice(method, "method", HYPERGRADIENT_METHODS)
    if fd_step is not None:
        fd_step = check_relative_step(fd_step)
    if checkpoint_every is not None:
        checkpoint_every = check_horizon(checkpoint_every, "checkpoint_every")
        if method != "backprop":
            raise ValueError("checkpoint_every applies to method='backprop' only")
    rule = SGD() if rule is None else rule
    run = _prepare(rule, params, batches, dict(hparams or {}), hypergradients_of, groups)
    if method == "forward":
        return _forward(rule, loss_fn, run, meta_loss_fn)
    if method == "backprop":
        return _backprop(rule, loss_fn, run, meta_loss_fn, checkpoint_every)
    return _finite_difference(rule, loss_fn, run, meta_loss_fn, fd_step)


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
    """Run plain SGD on ``loss_fn`` and differentiate ``meta_loss_fn(w_t)`` in the step size.

    The one-hyperparameter case of :func:`hypergradients` (``w ← w − η∇ℓ``, the
    paper's inner loop; the tangent obeys Eqn 2).

    Args:
        loss_fn: ``loss_fn(params, batch)`` → scalar training loss.
        params: Initial parameters ``w_0``: a pytree of floating tensors (not modified).
        batches: The ``t`` mini-batches, in order (``t ≥ 1``).
        lr: Step size ``η ≥ 0``.
        meta_loss_fn: ``meta_loss_fn(params)`` → scalar meta-loss.
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
    if method == "finite-difference" and lr == 0.0:
        raise ValueError("lr must be > 0 for method='finite-difference'")
    result = hypergradients(
        loss_fn,
        params,
        batches,
        meta_loss_fn,
        rule=SGD(),
        hparams={"lr": lr},
        method=method,
        fd_step=fd_step,
    )
    gradient = result.gradients["lr"]
    assert isinstance(gradient, float)
    return Hypergradient(result.value, gradient, result.params)


def _flat_grad_fn(
    loss_fn: Callable[[Any, Any], Tensor], spec: Any
) -> Callable[[list[Tensor], Any], list[Tensor]]:
    grad_fn = torch.func.grad(loss_fn)

    def flat(leaves: list[Tensor], batch: Any) -> list[Tensor]:
        grads: list[Tensor] = tree_flatten(grad_fn(tree_unflatten(leaves, spec), batch))[0]
        return grads

    return flat


def _train_at(
    rule: UpdateRule,
    loss_fn: Callable[[Any, Any], Tensor],
    run: _Run,
    group_hparams: Sequence[Mapping[str, float]],
) -> list[Tensor]:
    """The run itself at ``group_hparams`` (the rule's exact float arithmetic)."""
    grad_leaves = _flat_grad_fn(loss_fn, run.spec)
    leaves = list(run.leaves)
    states = rule.init(leaves)
    with torch.no_grad():
        for step, batch in enumerate(run.batches):
            grads = grad_leaves(leaves, batch)
            leaves, states = update_groups(
                rule, run.group_of, group_hparams, leaves, grads, states, [step] * len(leaves)
            )
    return leaves


def _forward(
    rule: UpdateRule,
    loss_fn: Callable[[Any, Any], Tensor],
    run: _Run,
    meta_loss_fn: Callable[[Any], Tensor],
) -> Hypergradients:
    grad_leaves = _flat_grad_fn(loss_fn, run.spec)
    leaves = list(run.leaves)
    states: list[TensorState] = rule.init(leaves)
    tangents: list[TangentState] = zero_tangents(leaves, states, len(run.directions))
    with torch.no_grad():
        for step, batch in enumerate(run.batches):
            grads = grad_leaves(leaves, batch)
            if step == 0:  # every tangent starts at 0: no Hessian-vector product
                hvps = [torch.zeros_like(t[0]) for t in tangents]
            else:
                hvps = _hessian_vector_products(
                    grad_leaves, leaves, batch, [t[0] for t in tangents]
                )
            leaves, states, tangents = tangent_step(
                rule,
                run.group_of,
                run.group_hparams,
                leaves,
                grads,
                states,
                [step] * len(leaves),
                run.directions,
                tangents,
                hvps,
            )
        final = tree_unflatten(leaves, run.spec)
        meta_grad, value = torch.func.grad_and_value(meta_loss_fn)(final)
        meta_leaves = tree_flatten(meta_grad)[0]
        derivatives = sum(
            (m.unsqueeze(0) * t[0]).flatten(1).sum(1)
            for m, t in zip(meta_leaves, tangents, strict=True)
        )
    return Hypergradients(
        float(value), gradients_by_name(run.directions, derivatives.tolist()), final
    )


def _hessian_vector_products(
    grad_leaves: Callable[[list[Tensor], Any], list[Tensor]],
    leaves: list[Tensor],
    batch: Any,
    tangents: list[Tensor],
) -> list[Tensor]:
    """``∇²ℓ(w)V`` for the stacked directions of ``tangents`` (forward over reverse).

    One ``vmap`` of ``jvp`` over the directions; a loss that ``vmap`` cannot batch
    (data-dependent control flow, in-place updates) falls back to one ``jvp`` each.
    """

    def product(v: list[Tensor]) -> list[Tensor]:
        return torch.func.jvp(lambda ls: grad_leaves(ls, batch), (leaves,), (v,))[1]

    if tangents[0].shape[0] == 1:
        return [x.unsqueeze(0) for x in product([t[0] for t in tangents])]
    try:
        batched: list[Tensor] = torch.func.vmap(product)(tangents)
        return batched
    except RuntimeError:
        per_direction = [product([t[j] for t in tangents]) for j in range(tangents[0].shape[0])]
        return [torch.stack(parts) for parts in zip(*per_direction, strict=True)]


def _backprop(
    rule: UpdateRule,
    loss_fn: Callable[[Any, Any], Tensor],
    run: _Run,
    meta_loss_fn: Callable[[Any], Tensor],
    checkpoint_every: int | None = None,
) -> Hypergradients:
    like = run.leaves[0]
    inputs: list[Tensor] = []
    group_values: list[dict[str, Any]] = [dict(h) for h in run.group_hparams]
    for direction in run.directions:
        groups = range(len(group_values)) if direction.group is None else [direction.group]
        value = run.group_hparams[next(iter(groups))][direction.name]
        leaf = torch.tensor(value, dtype=like.dtype, device=like.device, requires_grad=True)
        inputs.append(leaf)
        for group in groups:
            group_values[group][direction.name] = leaf
    current = [p.clone().requires_grad_(True) for p in run.leaves]
    states = rule.init(current)

    def steps(
        first: int, params: list[Tensor], states: list[TensorState]
    ) -> tuple[list[Tensor], list[TensorState]]:
        """Steps ``first, …`` of one segment, keeping the graph (``create_graph=True``)."""
        stop = len(run.batches) if checkpoint_every is None else first + checkpoint_every
        for step in range(first, min(stop, len(run.batches))):
            loss = loss_fn(tree_unflatten(params, run.spec), run.batches[step])
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            full = [
                torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
            ]
            params, states = update_groups(
                rule, run.group_of, group_values, params, full, states, [step] * len(params)
            )
        return params, states

    if checkpoint_every is None:
        current, states = steps(0, current, states)
    else:
        sizes = [len(s) for s in states]
        for first in range(0, len(run.batches), checkpoint_every):

            def segment(*flat: Tensor, first: int = first) -> tuple[Tensor, ...]:
                params = list(flat[: len(sizes)])
                rest = iter(flat[len(sizes) :])
                segment_states = [tuple(next(rest) for _ in range(n)) for n in sizes]
                params, segment_states = steps(first, params, segment_states)
                return (*params, *(x for state in segment_states for x in state))

            flat_in = (*current, *(x for state in states for x in state))
            flat_out = torch.utils.checkpoint.checkpoint(segment, *flat_in, use_reentrant=False)
            current = list(flat_out[: len(sizes)])
            rest = iter(flat_out[len(sizes) :])
            states = [tuple(next(rest) for _ in range(n)) for n in sizes]
    meta = meta_loss_fn(tree_unflatten(current, run.spec))
    derivatives = torch.autograd.grad(meta, inputs, allow_unused=True)
    final = tree_unflatten([p.detach() for p in current], run.spec)
    return Hypergradients(
        float(meta.detach()),
        gradients_by_name(run.directions, [0.0 if d is None else float(d) for d in derivatives]),
        final,
    )


def _finite_difference(
    rule: UpdateRule,
    loss_fn: Callable[[Any, Any], Tensor],
    run: _Run,
    meta_loss_fn: Callable[[Any], Tensor],
    fd_step: float | None,
) -> Hypergradients:
    eps = float(torch.finfo(run.leaves[0].dtype).eps) ** 0.5 if fd_step is None else fd_step

    def meta_at(group_hparams: Sequence[Mapping[str, float]]) -> float:
        with torch.no_grad():
            return float(
                meta_loss_fn(tree_unflatten(_train_at(rule, loss_fn, run, group_hparams), run.spec))
            )

    derivatives: list[float] = []
    for direction in run.directions:
        groups = range(len(run.group_hparams)) if direction.group is None else [direction.group]
        base = run.group_hparams[next(iter(groups))][direction.name]
        width = eps * abs(base) if base != 0.0 else eps
        moved = []
        for sign in (1.0, -1.0):
            values = [dict(h) for h in run.group_hparams]
            for group in groups:
                values[group][direction.name] = base + sign * width
            moved.append(meta_at(values))
        derivatives.append((moved[0] - moved[1]) / (2 * width))
    final = _train_at(rule, loss_fn, run, run.group_hparams)
    with torch.no_grad():
        value = float(meta_loss_fn(tree_unflatten(final, run.spec)))
    return Hypergradients(
        value, gradients_by_name(run.directions, derivatives), tree_unflatten(final, run.spec)
    )
