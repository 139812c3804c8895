"""Forward-mode hypergradients of any update rule: the one tangent recursion.

For an update rule ``(w_{k+1}, s_{k+1}) = U(w_k, g_k, s_k, h)`` with
``g_k = ∇ℓ(w_k; B_k)``, the derivative of the trajectory in a direction ``e`` of
the hyperparameters, ``(V_k, S_k) = ∂(w_k, s_k)/∂h · e``, obeys

    (V_{k+1}, S_{k+1}) = J_U(w_k, g_k, s_k, h) · (V_k, ∇²ℓ(w_k) V_k, S_k, e),

the paper's Eqn 2 (``V_{k+1} = (I − η∇²ℓ)V_k − ∇ℓ`` for plain SGD) for a general
rule. :func:`tangent_step` applies it once, the Jacobian-vector product of the rule
coming from ``torch.func.jvp``; the Hessian-vector product ``∇²ℓ(w_k) V_k`` is the
caller's (``torch.func`` forward-over-reverse in
:func:`~l2l_tune.hypergrad.hypergradients`, double backward in the drop-in
optimizers). Memory: one copy of the parameters and the state per direction,
whatever the number of steps.

Directions: a hyperparameter shared by every parameter group is one direction; a
hyperparameter whose value differs between groups (per-layer step sizes) is one
direction per group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .rules import TensorState, UpdateRule, groups_of, update_groups

__all__ = [
    "Direction",
    "TangentState",
    "directions_for",
    "gradients_by_name",
    "tangent_step",
    "zero_tangents",
]

#: The tangents of one parameter tensor: ``(V, *S)``, each stacked over the directions.
TangentState = tuple[Tensor, ...]


@dataclass(frozen=True)
class Direction:
    """One direction of differentiation.

    Attributes:
        name: The hyperparameter.
        group: The parameter group whose value moves, or ``None`` for all groups.
    """

    name: str
    group: int | None = None

    def seed(self, name: str, group: int) -> float:
        """``∂h_name(group)/∂(this direction)``: 1 or 0."""
        return 1.0 if name == self.name and self.group in (None, group) else 0.0


def directions_for(
    names: Sequence[str], group_hparams: Sequence[Mapping[str, float]]
) -> list[Direction]:
    """One direction per name, or one per group for names whose value differs by group.

    Raises:
        ValueError: for no names, a repeated name, or a name missing from a group.
    """
    if not names:
        raise ValueError("hypergradients_of must name at least one hyperparameter")
    if len(set(names)) != len(names):
        raise ValueError(f"hypergradients_of repeats a name: {list(names)}")
    directions: list[Direction] = []
    for name in names:
        missing = [i for i, h in enumerate(group_hparams) if name not in h]
        if missing:
            raise ValueError(
                f"hypergradients_of names {name!r}, which parameter group(s) {missing} "
                f"do not have; accepted: {sorted(group_hparams[missing[0]])}"
            )
        values = {float(h[name]) for h in group_hparams}
        if len(values) == 1:
            directions.append(Direction(name))
        else:
            directions.extend(Direction(name, i) for i in range(len(group_hparams)))
    return directions


def gradients_by_name(
    directions: Sequence[Direction], derivatives: Sequence[float]
) -> dict[str, float | list[float]]:
    """``{name: dM/dh}`` for a shared name, ``{name: [dM/dh_group, ...]}`` for a per-group one."""
    out: dict[str, float | list[float]] = {}
    for direction, derivative in zip(directions, derivatives, strict=True):
        if direction.group is None:
            out[direction.name] = float(derivative)
        else:
            per_group = out.setdefault(direction.name, [])
            assert isinstance(per_group, list)
            per_group.append(float(derivative))
    return out


def _as_tensors(values: Mapping[str, Any], like: Tensor) -> dict[str, Tensor]:
    return {
        name: torch.tensor(value, dtype=like.dtype, device=like.device)
        for name, value in values.items()
    }


def zero_tangents(
    params: Sequence[Tensor], states: Sequence[TensorState], k: int
) -> list[TangentState]:
    """The tangents of a run that has not started: ``(V, *S) = 0`` stacked over ``k`` directions."""
    return [
        tuple(torch.zeros((k, *x.shape), dtype=x.dtype, device=x.device) for x in (p, *s))
        for p, s in zip(params, states, strict=True)
    ]


def tangent_step(
    rule: UpdateRule | Sequence[UpdateRule],
    group_of: Sequence[int],
    group_hparams: Sequence[Mapping[str, float]],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[TensorState],
    steps: Sequence[int],
    directions: Sequence[Direction],
    tangents: Sequence[TangentState],
    hvps: Sequence[Tensor],
    seed_scale: Sequence[Mapping[str, float]] | None = None,
) -> tuple[list[Tensor], list[TensorState], list[TangentState]]:
    """One step of the parameters, the state and every direction's tangent.

    The directions are a leading batch dimension of every tangent: the
    Jacobian-vector product of the rule is ``torch.func.vmap`` of ``torch.func.jvp``
    over them (one call per group, whatever the number of hyperparameters).

    Args:
        rule: The update rule of every parameter group, or one per group.
        group_of: The group of each parameter tensor.
        group_hparams: Each group's hyperparameters (Python floats).
        params: ``w_k``, one tensor per entry.
        grads: ``∇ℓ(w_k)`` (without graph).
        states: Each tensor's rule state.
        steps: Each tensor's number of previous steps.
        directions: The ``d`` directions of :func:`directions_for`.
        tangents: ``tangents[i] = (V, *S)`` of tensor ``i``, each stacked ``(d, ...)``.
        hvps: ``hvps[i] = (∇²ℓ(w_k) V)_i`` stacked ``(d, ...)``.
        seed_scale: Optional per-group factors on the seeds (``∂h_k/∂h`` of a
            schedule: the lr of step ``k`` over the base lr).

    Returns:
        ``(w_{k+1}, s_{k+1}, tangents_{k+1})``; the primal step is the rule's exact
        float arithmetic.
    """
    new_params, new_states = update_groups(
        rule, group_of, group_hparams, params, grads, states, steps
    )
    new_tangents: list[TangentState] = list(tangents)
    n_dir = len(directions)
    for group, index, group_rule in groups_of(rule, group_of, len(group_hparams)):
        floats = group_hparams[group]
        p = [params[i] for i in index]
        g = [grads[i] for i in index]
        s = [states[i] for i in index]
        k = [steps[i] for i in index]
        like = p[0]
        scale = seed_scale[group] if seed_scale is not None else {}
        seeds = {
            name: [d.seed(name, group) * scale.get(name, 1.0) for d in directions]
            for name in floats
        }
        vp = [tangents[i][0] for i in index]
        vs = [tuple(tangents[i][1:]) for i in index]
        hv = [hvps[i] for i in index]
        moving = [*vp, *hv, *(x for state in vs for x in state)]
        if not any(any(v) for v in seeds.values()) and not any(bool(x.any()) for x in moving):
            # Nothing moves this group yet: its tangent stays 0 (shaped like the state
            # after the step, which a first step creates).
            for i in index:
                new_tangents[i] = zero_tangents([params[i]], [new_states[i]], n_dir)[0]
            continue
        primal_h, seed_h = _as_tensors(floats, like), _as_tensors(seeds, like)

        def moved(
            p_: list[Tensor],
            g_: list[Tensor],
            s_: list[TensorState],
            h_: dict[str, Tensor],
            group_rule: UpdateRule = group_rule,
            k: list[int] = k,
        ) -> tuple[list[Tensor], list[TensorState]]:
            return group_rule.update(p_, g_, s_, h_, k)

        def pushed(
            vp_: list[Tensor],
            hv_: list[Tensor],
            vs_: list[TensorState],
            sh_: dict[str, Tensor],
            moved: Any = moved,
            primals: Any = (p, g, s, primal_h),
        ) -> Any:
            return torch.func.jvp(moved, primals, (vp_, hv_, vs_, sh_))[1]

        tp, ts = torch.func.vmap(pushed)(vp, hv, vs, seed_h)
        for i, v_next, vs_next in zip(index, tp, ts, strict=True):
            new_tangents[i] = (v_next, *vs_next)
    return new_params, new_states, new_tangents
