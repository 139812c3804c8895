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

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
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

#: Tensors of this many elements or more go through an elementwise rule on their own.
_JOIN_BELOW = 1 << 15
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
    """``{name: dM/dh}`` for a shared name, ``{name: [dM/dh_group, ...]}`` for a per-group one.

    A non-finite derivative (a training run that diverged) is returned as it is, with a
    ``RuntimeWarning`` naming the hyperparameters, never silently.
    """
    bad = sorted(
        {d.name for d, x in zip(directions, derivatives, strict=True) if not math.isfinite(x)}
    )
    if bad:
        warnings.warn(
            f"non-finite hypergradient for {bad}: the training run diverged (a loss, weight or "
            "optimizer state overflowed); treat the run as failed",
            RuntimeWarning,
            stacklevel=3,
        )
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
        scale = seed_scale[group] if seed_scale is not None else {}
        seeds = {
            name: [d.seed(name, group) * scale.get(name, 1.0) for d in directions]
            for name in floats
        }
        seeded = any(any(v) for v in seeds.values())
        for cluster in _clusters(group_rule, index, params, steps):
            step = [steps[i] for i in cluster]
            p, g, s, vp, hv, vs = _join(
                group_rule,
                [params[i] for i in cluster],
                [grads[i] for i in cluster],
                [states[i] for i in cluster],
                [tangents[i] for i in cluster],
                [hvps[i] for i in cluster],
            )
            moving = [*vp, *hv, *(x for state in vs for x in state)]
            if not seeded and not any(bool(x.any()) for x in moving):
                # Nothing moves these tensors yet: their tangent stays 0 (shaped like the
                # state after the step, which a first step creates).
                for i in cluster:
                    new_tangents[i] = zero_tangents([params[i]], [new_states[i]], n_dir)[0]
                continue
            tp, ts = _push(group_rule, p, g, s, floats, step[: len(p)], vp, hv, vs, seeds)
            for i, tangent in zip(
                cluster, _split(tp, ts, [params[i] for i in cluster]), strict=True
            ):
                new_tangents[i] = tangent
    return new_params, new_states, new_tangents


def _push(
    rule: UpdateRule,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[TensorState],
    hparams: Mapping[str, float],
    steps: list[int],
    vp: list[Tensor],
    hv: list[Tensor],
    vs: list[TensorState],
    seeds: Mapping[str, list[float]],
) -> tuple[list[Tensor], list[TensorState]]:
    """The Jacobian-vector product of the rule for every direction (stacked first).

    Forward-mode AD (``torch.autograd.forward_ad``, the engine under
    ``torch.func.jvp``, at a third of its dispatch cost). An elementwise rule runs
    once for all ``d`` directions: the primals are repeated as ``d`` rows and each
    hyperparameter becomes a column holding its value, whose tangent is each
    direction's seed, so one pass costs the dispatch of one. Other rules run once
    per direction. A hyperparameter that no direction moves stays a Python float,
    so the rule takes its float path for it (a weight decay of 0 costs nothing).
    """
    n_dir = vp[0].shape[0]
    like = params[0]
    if rule.elementwise and len(params) == 1:
        column = (n_dir, 1)

        def rows(x: Tensor) -> Tensor:
            # One row per direction (a view for one direction: no copy).
            return x.reshape(1, -1) if n_dir == 1 else x.reshape(1, -1).repeat(column)

        with fwAD.dual_level():
            p = fwAD.make_dual(rows(params[0]), vp[0].reshape(n_dir, -1))
            g = fwAD.make_dual(rows(grads[0]), hv[0].reshape(n_dir, -1))
            s = tuple(
                fwAD.make_dual(rows(x), v.reshape(n_dir, -1))
                for x, v in zip(states[0], vs[0], strict=True)
            )
            h: dict[str, Any] = {
                name: fwAD.make_dual(
                    torch.full(column, value, dtype=like.dtype, device=like.device),
                    torch.tensor(seeds[name], dtype=like.dtype, device=like.device).reshape(column),
                )
                if any(seeds[name])
                else value  # no direction moves it: the rule's float path (weight decay 0: no op)
                for name, value in hparams.items()
            }
            out_p, out_s = rule.update([p], [g], [s], h, steps)
            shape = (n_dir, *params[0].shape)
            tangent_p = fwAD.unpack_dual(out_p[0]).tangent.reshape(shape)
            tangent_s = tuple(fwAD.unpack_dual(x).tangent.reshape(shape) for x in out_s[0])
        return [tangent_p], [tangent_s]
    per_direction: list[tuple[list[Tensor], list[TensorState]]] = []
    for j in range(n_dir):
        with fwAD.dual_level():
            dual_p = [fwAD.make_dual(x, v[j]) for x, v in zip(params, vp, strict=True)]
            dual_g = [fwAD.make_dual(x, v[j]) for x, v in zip(grads, hv, strict=True)]
            dual_s = [
                tuple(fwAD.make_dual(x, v[j]) for x, v in zip(state, tangent, strict=True))
                for state, tangent in zip(states, vs, strict=True)
            ]
            dual_h: dict[str, Any] = {
                name: fwAD.make_dual(
                    torch.tensor(value, dtype=like.dtype, device=like.device),
                    torch.tensor(seeds[name][j], dtype=like.dtype, device=like.device),
                )
                if seeds[name][j]
                else value
                for name, value in hparams.items()
            }
            out_p, out_s = rule.update(dual_p, dual_g, dual_s, dual_h, steps)
            per_direction.append(
                (
                    [_tangent_of(x) for x in out_p],
                    [tuple(_tangent_of(x) for x in state) for state in out_s],
                )
            )
    stacked_p = [torch.stack([d[0][i] for d in per_direction]) for i in range(len(params))]
    stacked_s = [
        tuple(torch.stack([d[1][i][c] for d in per_direction]) for c in range(len(out_s[i])))
        for i in range(len(params))
    ]
    return stacked_p, stacked_s


def _tangent_of(x: Tensor) -> Tensor:
    """The tangent of a rule's output (zero when it depends on no differentiated input)."""
    tangent = fwAD.unpack_dual(x).tangent
    return torch.zeros_like(x) if tangent is None else tangent


def _clusters(
    rule: UpdateRule, index: list[int], params: Sequence[Tensor], steps: Sequence[int]
) -> list[list[int]]:
    """The tensors whose tangents go through the rule in one call.

    An elementwise rule runs once on the concatenation of every small tensor with
    the same step count, dtype and device (one ``jvp`` instead of one per tensor: the
    dispatch overhead of forward-mode AD dominates small tensors) and once on each
    tensor of ``_JOIN_BELOW`` elements or more (there the copies of a concatenation
    cost more than the dispatch they save); other rules run on their list of
    tensors as it is.
    """
    if not rule.elementwise:
        return [index]
    clusters: dict[tuple[int, torch.dtype, torch.device], list[int]] = {}
    alone: list[list[int]] = []
    for i in index:
        if params[i].numel() >= _JOIN_BELOW:
            alone.append([i])  # large enough that copying it costs more than a dispatch
        else:
            clusters.setdefault((steps[i], params[i].dtype, params[i].device), []).append(i)
    return alone + list(clusters.values())


def _join(
    rule: UpdateRule,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[TensorState],
    tangents: list[TangentState],
    hvps: list[Tensor],
) -> tuple[
    list[Tensor], list[Tensor], list[TensorState], list[Tensor], list[Tensor], list[TensorState]
]:
    """The cluster's primals and tangents: flattened and concatenated for an elementwise rule."""
    vp = [t[0] for t in tangents]
    vs = [tuple(t[1:]) for t in tangents]
    if not rule.elementwise or len(params) == 1:
        return params, grads, states, vp, hvps, vs

    def flat(xs: list[Tensor]) -> Tensor:
        return torch.cat([x.reshape(-1) for x in xs])

    def flat_batched(xs: list[Tensor]) -> Tensor:
        return torch.cat([x.reshape(x.shape[0], -1) for x in xs], dim=1)

    n_state = len(states[0])
    return (
        [flat(params)],
        [flat(grads)],
        [tuple(flat([s[c] for s in states]) for c in range(n_state))],
        [flat_batched(vp)],
        [flat_batched(hvps)],
        [tuple(flat_batched([s[c] for s in vs]) for c in range(n_state))],
    )


def _split(tp: list[Tensor], ts: list[TensorState], params: list[Tensor]) -> list[TangentState]:
    """Undo :func:`_join` on the tangents after the step."""
    if len(tp) == len(params):
        return [(v, *state) for v, state in zip(tp, ts, strict=True)]
    sizes = [p.numel() for p in params]
    pieces = [torch.split(x, sizes, dim=1) for x in (tp[0], *ts[0])]
    return [
        tuple(piece[j].reshape(piece[j].shape[0], *p.shape) for piece in pieces)
        for j, p in enumerate(params)
    ]
