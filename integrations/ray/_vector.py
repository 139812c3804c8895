"""``HypergradientSearch``: several float hyperparameters of a Ray Tune run, tuned by gradients.

The trainable reports its metric and a mapping of derivatives by hyperparameter
name under ``grad_metric`` (default ``f"{metric}_grad"``), as the drop-in
optimizers' ``hypergradients()`` return it; Ray flattens it to
``"loss_grad/lr"``, ``"loss_grad/weight_decay"``, …. The searcher keeps the
finished trials as :class:`~l2l_tune.meta.VectorRecord` s and rebuilds a vector
meta-optimizer (:mod:`l2l_tune.meta.vector`: Adam on log-hyperparameters, or
projected meta-GD) from them for every suggestion, so ``save``/``restore`` (and
``Tuner.restore``) continue exactly where a run stopped.

Outcomes follow ``docs/trial_outcomes.md``: an errored trial or a NaN/infinite
metric is a diverged run (the next point goes back to the last finite one, or the
log-scale hyperparameters shrink); a finite metric without a finite derivative for
every tuned hyperparameter is a value-only record. The meta-optimizers are
sequential: concurrent trials get the same point until a result comes in.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from l2l_tune._validation import check_choice
from l2l_tune.meta import VECTOR_META_OPTIMIZERS
from l2l_tune.meta.base import NonFiniteMetaGradientWarning
from l2l_tune.meta.vector import (
    Hyperparameter,
    VectorMetaOptimizer,
    VectorRecord,
    check_names,
    check_start,
    log_objective_records,
)

from ._searcher import _reported_gradient, _StatefulSearcher
from ._space import check_space, float_domain, is_log, resolve_config

__all__ = ["HypergradientSearch"]


class HypergradientSearch(_StatefulSearcher):
    """Ray Tune searcher that tunes several float hyperparameters by meta-gradient descent.

    ::

        tuner = tune.Tuner(
            trainable,   # tune.report({"loss": v, "loss_grad": opt.hypergradients(val)})
            param_space={"lr": tune.loguniform(1e-5, 1e-1),
                         "weight_decay": tune.loguniform(1e-6, 1e-1)},
            tune_config=tune.TuneConfig(
                search_alg=HypergradientSearch(("lr", "weight_decay"), metric="loss",
                                               mode="min"),
                num_samples=30),
        )

    Args:
        params: The tuned keys (or ``/``-separated paths) of the search space, each a
            ``tune.uniform`` or ``tune.loguniform`` (searched in ``log x``) with
            ``0 ≤ lower``, not quantized.
        metric: Metric to minimise or maximise (or set by ``TuneConfig``).
        mode: ``"min"`` or ``"max"`` (or set by ``TuneConfig``).
        grad_metric: Result key of the mapping of derivatives (default ``f"{metric}_grad"``).
        space: Search space (else the Tuner's ``param_space``); other domains are
            sampled with ``seed`` as Ray samples them (``tune.grid_search`` is refused).
        meta_optimizer: ``"model"`` (:class:`~l2l_tune.meta.VectorGaussianProcess`,
            default), ``"adam"`` (:class:`~l2l_tune.meta.VectorLogAdam`) or ``"paper"``.
        start: First point, a value for every tuned key (default: the geometric
            mean of a log range, the midpoint of a linear one).
        log_objective: Step on ``log(metric)`` while every value is positive.
        seed: Seed of the other domains' sampling.
        meta_optimizer_options: Extra arguments of the meta-optimizer (``lr``, …).

    Raises:
        ValueError: for no or repeated ``params``, an unknown ``meta_optimizer`` or
            ``mode``; at the first suggestion, for a tuned key that is not a float domain.
    """

    def __init__(
        self,
        params: Sequence[str],
        metric: str | None = None,
        mode: str | None = None,
        *,
        grad_metric: str | None = None,
        space: Mapping[str, Any] | None = None,
        meta_optimizer: str = "model",
        start: Mapping[str, float] | None = None,
        log_objective: bool = True,
        seed: int | None = None,
        meta_optimizer_options: Mapping[str, Any] | None = None,
    ) -> None:
        names = check_names(params)
        if mode is not None:
            check_choice(mode, "mode", ("min", "max"))
        super().__init__(metric=metric, mode=mode)
        self.params = names
        self.meta_optimizer = check_choice(
            meta_optimizer, "meta_optimizer", tuple(VECTOR_META_OPTIMIZERS)
        )
        self.grad_metric = grad_metric
        self.start = check_start(start, names)
        self.log_objective = bool(log_objective)
        self.meta_optimizer_options = dict(meta_optimizer_options or {})
        self._space: dict[str, Any] | None = dict(space) if space is not None else None
        self._rng = np.random.RandomState(seed)
        self._records: list[VectorRecord] = []
        self._configs: dict[str, dict[str, float]] = {}

    # ------------------------------------------------------------------ Ray's interface
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The meta-optimizer's next point for the tuned keys; the other domains sampled
        as Ray samples them (``None`` while ``max_concurrent`` trials run)."""
        optimizer = self.meta_optimizer_state()
        assert self._space is not None
        check_space(self._space, type(self).__name__)
        if self._at_concurrency_limit():
            return None
        proposal = optimizer.ask()
        self._configs[trial_id] = proposal
        paths = {name: float_domain(self._space, name, repr(name))[0] for name in self.params}
        fixed = {paths[name]: value for name, value in proposal.items()}
        return resolve_config(self._space, fixed, self._rng)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Record the trial's metric and derivatives (``docs/trial_outcomes.md``)."""
        values = self._configs.pop(trial_id, None)
        if values is None:
            return
        sign = -1.0 if self.mode == "max" else 1.0
        value = None if (error or result is None) else result.get(self.metric)
        if value is None or isinstance(value, bool) or not isinstance(value, numbers.Real):
            self._records.append(VectorRecord(values, math.inf, None))
            return
        if not math.isfinite(float(value)):
            self._records.append(VectorRecord(values, math.inf, None))
            return
        grad_key = self.grad_metric or f"{self.metric}_grad"
        grads: dict[str, float] | None = {}
        for name in self.params:
            reported = _reported_gradient(result, grad_key, name)
            try:
                grad = float(reported) if reported is not None else math.nan
            except (TypeError, ValueError):
                grad = math.nan
            if not math.isfinite(grad):
                grads = None  # value only
                break
            assert grads is not None
            grads[name] = sign * grad
        self._records.append(VectorRecord(values, sign * float(value), grads))

    def get_state(self) -> dict[str, Any]:
        """The told records, the pending trials' points, the RNG, metric, mode and space."""
        return {
            "records": [r.to_dict() for r in self._records],
            "configs": copy.deepcopy(self._configs),
            **self._common_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s result."""
        self._records = [
            VectorRecord(r["values"], r["value"], r["gradients"], r.get("partial", False))
            for r in state["records"]
        ]
        self._configs = copy.deepcopy(state["configs"])
        self._set_common_state(state)

    # ------------------------------------------------------------------ results
    def meta_optimizer_state(self) -> VectorMetaOptimizer:
        """The meta-optimizer rebuilt from the finished trials; its ``estimate()`` is the
        current recommendation (the last iterate)."""
        cls = VECTOR_META_OPTIMIZERS[self.meta_optimizer]
        optimizer = cls(self._hyperparameters(), start=self.start, **self.meta_optimizer_options)
        records = log_objective_records(self._records) if self.log_objective else self._records
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
            for record in records:
                optimizer.tell(record.values, record.value, record.gradients)
        return optimizer

    def _hyperparameters(self) -> list[Hyperparameter]:
        if self._space is None:
            raise ValueError(
                "HypergradientSearch has no search space: pass space=... or a Tuner param_space"
            )
        out = []
        for name in self.params:
            _, domain = float_domain(self._space, name, repr(name))
            out.append(
                Hyperparameter(name, float(domain.lower), float(domain.upper), log=is_log(domain))
            )
        return out

    def _n_running(self) -> int:
        return len(self._configs)
