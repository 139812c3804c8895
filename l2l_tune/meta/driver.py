"""Turning evaluations held by a framework into meta-optimizer records and proposals.

The Optuna sampler and the Ray Tune searcher both hold the same thing: a list of
evaluations of the objective (finished or running) at some step sizes, with or
without a reported meta-gradient. This module is the one place that turns such
a list into :class:`~l2l_tune.meta.MetaRecord` s and the next step size:

* values are transformed (``log`` for positive values, the paper's Theorem 4;
  negated for maximisation) with the chain rule applied to the gradients;
* non-finite values or gradients are skipped (reported through ``on_skip``);
* without reported gradients, evaluations are paired as finite differences:
  a *probe* at ``η·e^{−h/2}`` and its *partner* at ``η·e^{h/2}`` make one record
  at their geometric mean ``η`` (the step size the optimizer asked for), with
  the secant slope as its meta-gradient;
* the next step size avoids those of running evaluations.

Everything is a pure function of the evaluation list, so any process that can
read the list (a shared study, a restored searcher) computes the same proposal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from .base import MetaOptimizer, MetaRecord

__all__ = ["Evaluation", "Proposal", "propose", "records_from_evaluations"]

PROBE = "probe"
PARTNER = "partner"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the objective, as a framework stores it.

    Attributes:
        key: Identifier (trial number, group id).
        eta: Step size evaluated.
        value: Objective value, ``None`` while running or when it failed.
        grad: Reported derivative of ``value`` in ``eta``, or ``None``.
        running: Whether the evaluation is still in progress.
        role: ``"probe"``, ``"partner"`` (finite-difference pairs) or ``None``.
        pair: For a partner, the key of its probe.
        fd_step: For a probe, the log-spacing ``h`` of its pair.
    """

    key: Hashable
    eta: float
    value: float | None
    grad: float | None = None
    running: bool = False
    role: str | None = None
    pair: Hashable | None = None
    fd_step: float | None = None


@dataclass(frozen=True)
class Proposal:
    """The next step size, with its finite-difference role.

    Attributes:
        eta: The step size.
        role: ``"probe"``, ``"partner"`` or ``None`` (gradients are reported).
        pair: For a partner, the key of its probe.
        fd_step: For a probe, the log-spacing ``h`` of its pair (store it with the probe).
    """

    eta: float
    role: str | None = None
    pair: Hashable | None = None
    fd_step: float | None = None


def records_from_evaluations(
    evaluations: Sequence[Evaluation],
    *,
    log_objective: bool = True,
    maximize: bool = False,
    on_skip: Callable[[Evaluation, str], None] | None = None,
) -> list[MetaRecord]:
    """Meta-optimizer records from finished evaluations.

    Args:
        evaluations: All evaluations, in the order they were created.
        log_objective: Work on ``log(value)`` when every finished value is positive.
        maximize: The framework maximises ``value`` (records then hold ``−value``).
        on_skip: Called with an evaluation and the reason when a non-finite value
            or gradient is skipped.

    Returns:
        Records in evaluation order (gradient records, and finite-difference
        pairs at the position of their probe), then one ``(η, inf, None)``
        record per non-finite value.
    """
    finished = [e for e in evaluations if not e.running and e.value is not None]
    finite: list[Evaluation] = []
    diverged: list[MetaRecord] = []
    for evaluation in finished:
        assert evaluation.value is not None
        if math.isfinite(evaluation.value):
            finite.append(evaluation)
            continue
        # A non-finite value is a diverged inner run: it tells the optimizer that
        # this step size is too large (never a NaN in its arithmetic).
        diverged.append(MetaRecord(evaluation.eta, math.inf, None))
        if on_skip is not None:
            on_skip(evaluation, f"non-finite value {evaluation.value}, treated as diverged")
    use_log = log_objective and not maximize and all(e.value > 0 for e in finite)  # type: ignore[operator]

    def transform(value: float, grad: float) -> tuple[float, float]:
        if maximize:
            return -value, -grad
        if use_log:
            return math.log(value), grad / value
        return value, grad

    by_key = {e.key: e for e in finite}
    partners = {e.pair: e for e in evaluations if e.role == PARTNER}
    records: list[MetaRecord] = []
    for evaluation in finite:
        value = float(evaluation.value)  # type: ignore[arg-type]
        if evaluation.grad is not None:
            if not math.isfinite(evaluation.grad):
                if on_skip is not None:
                    on_skip(evaluation, f"non-finite meta-gradient {evaluation.grad}")
                continue
            records.append(MetaRecord(evaluation.eta, *transform(value, evaluation.grad)))
        elif evaluation.role == PROBE:
            partner = partners.get(evaluation.key)
            if partner is None or partner.key not in by_key or partner.eta == evaluation.eta:
                continue
            y_a, _ = transform(value, 0.0)
            y_b, _ = transform(float(partner.value), 0.0)  # type: ignore[arg-type]
            slope = (y_b - y_a) / (partner.eta - evaluation.eta)
            midpoint = math.sqrt(evaluation.eta * partner.eta)
            records.append(MetaRecord(midpoint, 0.5 * (y_a + y_b), slope))
    return records + diverged


def propose(
    optimizer: MetaOptimizer,
    evaluations: Sequence[Evaluation],
    *,
    fd_step: float,
    bounds: tuple[float, float],
    exclude: Hashable | None = None,
    claims_ahead: int = 0,
) -> Proposal:
    """The next step size for a new evaluation.

    ``optimizer`` must already hold the records of ``evaluations``
    (:func:`records_from_evaluations`). While no evaluation has reported a
    gradient, the new evaluation first completes an open finite-difference pair
    (a probe without partner, running or finished); otherwise it is a new
    probe at the optimizer's proposal. Once gradients are reported, it is the
    optimizer's proposal, away from the step sizes of running evaluations.

    Args:
        optimizer: The meta-optimizer rebuilt from the records.
        evaluations: All evaluations (finished and running).
        fd_step: Relative spacing ``h`` of finite-difference pairs.
        bounds: ``(low, high)`` of the step size.
        exclude: Key of the evaluation being proposed for, if already listed.
        claims_ahead: Evaluations created before this one that are about to be
            proposed for but are not listed yet (concurrent sampling): their
            proposals are computed first and avoided, so two workers sampling
            at the same moment do not get the same step size.
    """
    low, high = bounds
    others = [e for e in evaluations if e.key != exclude]
    any_gradient = any(e.grad is not None for e in others)
    if not any_gradient:
        paired = {e.pair for e in others if e.role == PARTNER and not _failed(e)}
        open_probes = [
            e for e in others if e.role == PROBE and e.key not in paired and not _failed(e)
        ]
        if open_probes:
            probe = open_probes[0]
            h = probe.fd_step if probe.fd_step is not None else fd_step
            eta = probe.eta * math.exp(h)
            if eta > high:
                eta = probe.eta * math.exp(-h)
            return Proposal(min(max(eta, low), high), PARTNER, probe.key)
    pending = [e.eta for e in others if e.running]
    # A finite-difference pair stands for the step size at its centre: while either half
    # is running, that centre is taken too (else the next worker would ask for it again).
    by_key = {e.key: e for e in others}
    for e in others:
        centre_of: Evaluation | None = None
        if e.role == PARTNER:
            centre_of = by_key.get(e.pair)
        elif e.role == PROBE:
            centre_of = e
        if centre_of is None or not (e.running or centre_of.running):
            continue
        spacing = centre_of.fd_step if centre_of.fd_step is not None else fd_step
        pending.append(centre_of.eta * math.exp(0.5 * spacing))
    for _ in range(claims_ahead):
        pending.append(min(max(optimizer.ask(pending), low), high))
    eta = min(max(optimizer.ask(pending), low), high)
    if any_gradient:
        return Proposal(eta, None, None)
    # Centre the pair on the proposal: probe at η·e^{−h/2}, partner at η·e^{h/2}, so
    # that the pair's record (at their geometric mean) lands on the asked step size.
    # The spacing shrinks with the distance to the nearest evaluated step size (down to
    # fd_step/1000), so the secant slope's O(h²) bias does not limit the final precision.
    h = fd_step
    known = [e.eta for e in others if e.eta > 0.0]
    if known and eta > 0.0:
        nearest = min(abs(math.log(eta / k)) for k in known)
        h = min(fd_step, max(0.5 * nearest, 1e-3 * fd_step))
    return Proposal(max(eta * math.exp(-0.5 * h), low), PROBE, None, h)


def _failed(evaluation: Evaluation) -> bool:
    return not evaluation.running and evaluation.value is None
