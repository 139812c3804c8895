"""Turning evaluations held by a framework into meta-optimizer records and proposals.

The Optuna sampler and the Ray Tune searcher both hold the same thing: a list of
evaluations of the objective (finished or running) at some step sizes, with or
without a reported meta-gradient. This module is the one place that turns such
a list into :class:`~l2l_tune.meta.MetaRecord` s and the next step size:

* values are transformed (``log`` for positive values, the paper's Theorem 4;
  negated for maximisation) with the chain rule applied to the gradients;
* without reported gradients, evaluations are paired as finite differences:
  a *probe* at ``η·e^{−h/2}`` and its *partner* at ``η·e^{h/2}`` make one record
  at their geometric mean ``η`` (the step size the optimizer asked for), with
  the secant slope as its meta-gradient;
* every outcome of an evaluation is information (:func:`outcome`; the policy
  table is in ``docs/trial_outcomes.md``):

  ========================  ==============================  =========================
  outcome                   record                          next proposals
  ========================  ==============================  =========================
  finite value + gradient   ``(η, value, grad)``            the optimizer's
  finite value, no usable   ``(η, value, None)``            avoid ``η``
  gradient (NaN/inf grad)   (value only)
  pruned (partial run)      ``(η, last value, None,         avoid ``η``
                            partial=True)``
  failed (no value, NaN or  ``(η, inf, None)``: diverged,   avoid ``η``
  inf value, exception)     "too large"
  running                   none yet                        avoid ``η``
  ========================  ==============================  =========================

  A finished finite-difference probe or partner whose other half failed or was
  pruned keeps its own value as a value-only record.
* the next step size avoids those of running evaluations and of every finished
  evaluation that gave no gradient record (so one failed, pruned or gradient-less
  run never freezes the search on its step size).

Everything is a pure function of the evaluation list, so any process that can
read the list (a shared study, a restored searcher) computes the same proposal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from .base import MetaOptimizer, MetaRecord

__all__ = [
    "COMPLETE",
    "FAILED",
    "PARTIAL",
    "RUNNING",
    "Evaluation",
    "Proposal",
    "outcome",
    "propose",
    "records_from_evaluations",
]

PROBE = "probe"
PARTNER = "partner"

#: Outcomes of an evaluation (:func:`outcome`).
RUNNING = "running"
COMPLETE = "complete"
PARTIAL = "partial"
FAILED = "failed"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the objective, as a framework stores it.

    Attributes:
        key: Identifier (trial number, group id).
        eta: Step size evaluated.
        value: Objective value; ``None`` while running or when it failed (an
            exception, a Ray error, a missing metric). For a pruned evaluation,
            the last intermediate value (``None`` if it reported none).
        grad: Reported derivative of ``value`` in ``eta``, or ``None``.
        running: Whether the evaluation is still in progress.
        role: ``"probe"``, ``"partner"`` (finite-difference pairs) or ``None``.
        pair: For a partner, the key of its probe.
        fd_step: For a probe, the log-spacing ``h`` of its pair.
        pruned: The run was stopped early (Optuna's PRUNED): ``value`` is partial.
        tentative: A running evaluation whose step size is claimed by a concurrent
            worker but not final yet (it may still move): avoided, never partnered.
    """

    key: Hashable
    eta: float
    value: float | None
    grad: float | None = None
    running: bool = False
    role: str | None = None
    pair: Hashable | None = None
    fd_step: float | None = None
    pruned: bool = False
    tentative: bool = False


def outcome(evaluation: Evaluation) -> str:
    """What an evaluation tells: ``"running"``, ``"complete"``, ``"partial"`` or ``"failed"``.

    ``"failed"``: finished without a finite value (no value, NaN or ±inf; a pruned
    run without intermediate value). ``"partial"``: pruned with a finite last
    value. ``"complete"``: finished with a finite value (its gradient may still be
    missing or non-finite: then the record is value-only).
    """
    if evaluation.running:
        return RUNNING
    value = evaluation.value
    if value is None or not math.isfinite(value):
        return FAILED
    return PARTIAL if evaluation.pruned else COMPLETE


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
    """Meta-optimizer records from finished evaluations (the policy of the module docstring).

    Args:
        evaluations: All evaluations, in the order they were created.
        log_objective: Work on ``log(value)`` when every finite finished value
            (partial ones included) is positive.
        maximize: The framework maximises ``value`` (records then hold ``−value``).
        on_skip: Called with an evaluation and the reason when it yields less than
            a gradient record: a failed run (told as diverged), a non-finite
            gradient (dropped, value kept).

    Returns:
        One record per finished evaluation in evaluation order (a finite-difference
        pair gives one record, at the position of its probe; a half whose other
        half is still running gives none yet):

        * ``(η, value, grad)``: a finite value with a finite gradient (reported or
          the pair's secant slope);
        * ``(η, value, None)``: a finite value without usable gradient;
        * ``(η, value, None, partial=True)``: a pruned run's last value;
        * ``(η, inf, None)``: a failed run, read by the meta-optimizers as a
          diverged run, "too large" (never a NaN in their arithmetic).
    """
    finished = [e for e in evaluations if not e.running]
    finite = [e for e in finished if outcome(e) in (COMPLETE, PARTIAL)]
    use_log = log_objective and not maximize and all(e.value > 0 for e in finite)  # type: ignore[operator]

    def transform(value: float, grad: float) -> tuple[float, float]:
        if maximize:
            return -value, -grad
        if use_log:
            return math.log(value), grad / value
        return value, grad

    def skip(evaluation: Evaluation, reason: str) -> None:
        if on_skip is not None:
            on_skip(evaluation, reason)

    by_key = {e.key: e for e in evaluations}
    partners = {e.pair: e for e in evaluations if e.role == PARTNER}
    records: list[MetaRecord] = []
    for evaluation in finished:
        kind = outcome(evaluation)
        if kind == FAILED:
            records.append(MetaRecord(evaluation.eta, math.inf, None))
            reason = (
                "no value (failed)" if evaluation.value is None else f"value {evaluation.value}"
            )
            skip(evaluation, f"{reason}, treated as a diverged run (step size too large)")
            continue
        value = float(evaluation.value)  # type: ignore[arg-type]
        y, _ = transform(value, 0.0)
        if kind == PARTIAL:
            records.append(MetaRecord(evaluation.eta, y, None, partial=True))
            continue
        if evaluation.grad is not None:
            if math.isfinite(evaluation.grad):
                records.append(MetaRecord(evaluation.eta, *transform(value, evaluation.grad)))
            else:
                records.append(MetaRecord(evaluation.eta, y, None))
                skip(evaluation, f"non-finite meta-gradient {evaluation.grad} dropped, value kept")
            continue
        if evaluation.role == PROBE:
            partner = partners.get(evaluation.key)
            if partner is None or partner.running:
                continue  # the pair's record comes when the partner finishes
            if outcome(partner) != COMPLETE or partner.eta == evaluation.eta:
                records.append(MetaRecord(evaluation.eta, y, None))
                continue
            y_b, _ = transform(float(partner.value), 0.0)  # type: ignore[arg-type]
            slope = (y_b - y) / (partner.eta - evaluation.eta)
            midpoint = math.sqrt(evaluation.eta * partner.eta)
            records.append(MetaRecord(midpoint, 0.5 * (y + y_b), slope))
        elif evaluation.role == PARTNER:
            probe = by_key.get(evaluation.pair)
            if probe is not None and outcome(probe) == COMPLETE and probe.eta != evaluation.eta:
                continue  # recorded with its probe
            records.append(MetaRecord(evaluation.eta, y, None))
        else:
            records.append(MetaRecord(evaluation.eta, y, None))
    return records


def propose(
    optimizer: MetaOptimizer,
    evaluations: Sequence[Evaluation],
    *,
    fd_step: float,
    bounds: tuple[float, float],
    exclude: Hashable | None = None,
    claims_ahead: int | Sequence[Hashable] = 0,
) -> Proposal:
    """The next step size for a new evaluation.

    ``optimizer`` must already hold the records of ``evaluations``
    (:func:`records_from_evaluations`). While no evaluation has reported a
    gradient, the new evaluation first completes an open finite-difference pair
    (a running or complete probe without partner); otherwise it is a new probe
    at the optimizer's proposal. Once gradients are reported, it is the
    optimizer's proposal. A meta-optimizer that learns from values
    (``needs_gradients = False``, the model-based ``"model"``) never gets pairs:
    each black-box evaluation is a value-only record. Either way the proposal
    avoids the step sizes (and pair centres) of running evaluations and of
    finished ones that gave no gradient record (failed, pruned, value-only), passed to
    :meth:`MetaOptimizer.ask` as ``pending``.

    Args:
        optimizer: The meta-optimizer rebuilt from the records.
        evaluations: All evaluations (finished and running).
        fd_step: Relative spacing ``h`` of finite-difference pairs.
        bounds: ``(low, high)`` of the step size.
        exclude: Key of the evaluation being proposed for, if already listed.
        claims_ahead: Evaluations created before this one that are about to be
            proposed for but are not listed yet (concurrent sampling), as their
            keys in creation order, or their number: their proposals are
            computed first, in order, each added as a running evaluation, so two
            workers sampling at the same moment neither take the same step size
            nor partner the same probe. (A proposal may partner one of them:
            its ``pair`` is then that key; with a number, ``("claim-ahead", i)``.)

    Raises:
        ValueError: if ``claims_ahead`` is negative or ``bounds`` is not ``low < high``.
    """
    if isinstance(claims_ahead, int):
        if claims_ahead < 0:
            raise ValueError(f"claims_ahead must be >= 0, got {claims_ahead!r}")
        ahead_keys: list[Hashable] = [("claim-ahead", i) for i in range(claims_ahead)]
    else:
        ahead_keys = list(claims_ahead)
    low, high = (float(b) for b in bounds)
    if not low < high:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    others = [e for e in evaluations if e.key != exclude]
    for key in ahead_keys:
        ahead = _propose_one(optimizer, others, fd_step, low, high)
        others.append(
            Evaluation(
                key,
                ahead.eta,
                None,
                running=True,
                role=ahead.role,
                pair=ahead.pair,
                fd_step=ahead.fd_step,
                tentative=True,
            )
        )
    return _propose_one(optimizer, others, fd_step, low, high)


def _propose_one(
    optimizer: MetaOptimizer,
    others: list[Evaluation],
    fd_step: float,
    low: float,
    high: float,
) -> Proposal:
    # Finite-difference pairs only for a meta-optimizer that needs gradients and only
    # while none is reported; the model-based one learns from the values themselves.
    pairs = optimizer.needs_gradients and not any(e.grad is not None for e in others)
    if pairs:
        # A probe is open while it runs or completed, and nothing partners it
        # (a failed or pruned partner closes it too: its step size is not retried).
        # A tentative probe (a concurrent claim that may still move) is not partnered.
        paired = {e.pair for e in others if e.role == PARTNER}
        open_probes = [
            e
            for e in others
            if e.role == PROBE
            and not e.tentative
            and e.key not in paired
            and outcome(e) in (RUNNING, COMPLETE)
        ]
        if open_probes:
            probe = open_probes[0]
            h = probe.fd_step if probe.fd_step is not None else fd_step
            eta = probe.eta * math.exp(h)
            if eta > high:
                eta = probe.eta * math.exp(-h)
            return Proposal(min(max(eta, low), high), PARTNER, probe.key)
    avoid = _occupied(others, fd_step)
    eta = min(max(optimizer.ask(avoid), low), high)
    if not pairs:
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


def _occupied(others: list[Evaluation], fd_step: float) -> list[float]:
    """Step sizes the next proposal must avoid.

    Every evaluation that is not part of a gradient record: running ones, and
    finished ones that failed, were pruned or have no usable gradient (so the
    optimizer, whose proposal they did not change, does not ask for them again).
    A finite-difference half also takes its pair's centre (the step size the
    optimizer asked for).
    """
    by_key = {e.key: e for e in others}
    complete_pairs = {
        e.pair
        for e in others
        if e.role == PARTNER
        and outcome(e) == COMPLETE
        and e.pair in by_key
        and outcome(by_key[e.pair]) == COMPLETE
        and by_key[e.pair].eta != e.eta
    }
    out: list[float] = []
    for e in others:
        if outcome(e) == COMPLETE and (
            (e.grad is not None and math.isfinite(e.grad))
            or (e.role == PROBE and e.key in complete_pairs)
            or (e.role == PARTNER and e.pair in complete_pairs)
        ):
            continue
        out.append(e.eta)
        centre_of = by_key.get(e.pair) if e.role == PARTNER else e if e.role == PROBE else None
        if centre_of is not None:
            spacing = centre_of.fd_step if centre_of.fd_step is not None else fd_step
            out.append(centre_of.eta * math.exp(0.5 * spacing))
    return out
