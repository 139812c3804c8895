"""Bayesian optimisation of several hyperparameters on values and hypergradients.

The vector form of :class:`~l2l_tune.meta.GaussianProcessMetaOptimizer`, for the
objectives users bring: a fresh seed per run (noisy values, noisier gradients),
rugged ReLU losses, and chaotic or diverging runs at large step sizes (the
paper's Theorem 3). :class:`VectorLogAdam` trusts every meta-gradient and keeps
stepping on noise; this meta-optimizer instead fits one Gaussian process to every
told value *and* hypergradient (:mod:`~l2l_tune.meta.surrogate`: a Matérn-5/2
kernel with one lengthscale per hyperparameter, value and gradient noise learned
separately), proposes where the expected improvement is largest, and recommends
the told point whose posterior mean plus two standard deviations is lowest — an
average over the neighbouring runs, not the luckiest one.

Coordinates: the GP sees ``z = log x`` for a log-scale hyperparameter (step
sizes, decays; a unit is a factor ``e``) and ``z = 4·(x − low)/(high − low)``
for a linear one (momenta: the range spans 4 units, about as far as two decades
of a step size), so one lengthscale prior fits both.

The rules carried over from the one-dimensional model, each learnt there on a
measured failure (see :mod:`~l2l_tune.meta.model`):

* values are warped (``_warp``): the huge losses of chaotic runs saturate;
* a diverged run (an infinite value) is a value observation at the warp's
  ceiling, so the acquisition learns to stay away from it (its hypergradient is
  meaningless and dropped);
* a hypergradient implying that the whole spread of the values is crossed within
  ``1e-4`` units is chaotic and dropped (``_MAX_GRADIENT_RATIO``); on a noisy fit
  a slope steeper than 10 standard deviations of the values per unit is an
  outlier (``_smooth_slopes``) and the fit is redone with the smooth lengthscale
  prior (median 2 units), since ten to thirty noisy runs cannot tell a short
  lengthscale from noise;
* proposals stay inside a trust region: the box of the told points widened by
  ``log 3`` on every side (a factor 3 for a step size);
* the first proposal after the start follows the hypergradient (a factor 3 along
  its normalised direction); without gradients a scrambled Sobol design over the
  whole space runs until ``d + 2`` values are in.

The proposal is a pure function of the told history (fixed-seed Sobol
candidates, deterministic L-BFGS-B refinement, one BLAS thread), so an Optuna
study or a Ray checkpoint rebuilds it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.optimize
from numpy.typing import NDArray
from scipy.stats import qmc

from .._validation import check_int
from .model import (
    _DESCENT_FLAT,
    _EXACT_NOISE,
    _LENGTHSCALE_PRIOR,
    _MAX_GRADIENT_RATIO,
    _MAX_LENGTHSCALE,
    _NOISY,
    _NOISY_LENGTHSCALE_PRIOR,
    _NOISY_MAX_LENGTHSCALE,
    _single_blas_thread,
    _smooth_slopes,
    _warp,
    _warp_level,
    log_expected_improvement,
)
from .surrogate import GaussianProcess, fit_gaussian_process
from .vector import Hyperparameter, HyperparameterSpace, VectorMetaOptimizer, VectorRecord

__all__ = ["VectorGaussianProcess"]

FloatArray = NDArray[np.float64]

#: Units of ``z`` spanned by the whole range of a linear-scale hyperparameter.
_LINEAR_SPAN = 4.0
#: The trust region's margin around the told points, and the first step along a
#: hypergradient: ``log 3`` units (a factor 3 in a step size).
_MARGIN = math.log(3.0)
#: Smallest distance (max-norm, ``z`` units) between a proposal and a told point.
_MIN_SEPARATION = 1e-6
#: Acquisition candidates: Sobol points over the trust region, and points around the
#: incumbent (normal, ``_LOCAL_SD`` units) that resolve a narrow basin.
_GLOBAL_CANDIDATES = 512
_LOCAL_CANDIDATES = 128
_LOCAL_SD = 0.25
#: The best candidates refined by L-BFGS-B.
_REFINED = 3
#: The pick minimises ``μ + κσ`` over the told points. With several hyperparameters a
#: sparsely sampled point away from the cluster has a posterior ``σ`` two to three times the
#: cluster's and a mean that the trusted slopes around it can pull below its own
#: observation (measured: MNIST AdamW study 2, a run at (lr, wd) = (0.014, 2.3) observed
#: at the cluster's level got a mean 2 noise sd below it and was picked at 12.7 % regret
#: with κ = 1; κ = 2 keeps the cluster's pick, 1.8 %). The one-dimensional model uses 1.
_RECOMMEND_KAPPA = 2.0


class VectorGaussianProcess(VectorMetaOptimizer):
    """Bayesian optimisation over a :class:`HyperparameterSpace` with values and hypergradients.

    Args:
        space: The hyperparameters.
        start: First proposal (default: the geometric mean of each log range, the
            middle of each linear one).
        n_initial: Values told before the model proposes when no told record has a
            gradient (default ``d + 2``: the start and a Sobol design). With a
            hypergradient the model takes over from the second record.
        seed: Seed of the Sobol design and the acquisition's candidates (the
            proposals are a deterministic function of the told history and it).

    Raises:
        ValueError: for a bad space or start, ``n_initial < 1`` or a seed that is not
            a non-negative integer.
    """

    name = "model"

    def __init__(
        self,
        space: HyperparameterSpace | Sequence[Hyperparameter],
        *,
        start: Mapping[str, float] | None = None,
        n_initial: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(space, start=start)
        d = len(self.space.parameters)
        self.n_initial = d + 2 if n_initial is None else check_int(n_initial, "n_initial", 1)
        self.seed = check_int(seed, "seed", 0)
        self._log = np.array([p.log for p in self.space.parameters])
        self._units = np.where(self._log, 1.0, _LINEAR_SPAN)
        low = self.space.to_internal({p.name: p.low for p in self.space.parameters})
        high = self.space.to_internal({p.name: p.high for p in self.space.parameters})
        self._low, self._high = low * self._units, high * self._units

    # ------------------------------------------------------------------ coordinates
    def _z(self, values: Mapping[str, float]) -> FloatArray:
        return self.space.to_internal(values) * self._units

    def _z_gradient(self, record: VectorRecord) -> FloatArray:
        assert record.gradients is not None
        return self.space.internal_gradient(record.values, record.gradients) / self._units

    # ------------------------------------------------------------------ the proposal
    def _propose(self) -> FloatArray:
        with _single_blas_thread():
            z = self._proposal_z()
        return np.clip(z, self._low, self._high) / self._units

    def _proposal_z(self) -> FloatArray:
        start = self._z(self.start)
        told = [self._z(r.values) for r in self.history]
        finite = [r for r in self.history if math.isfinite(r.value) and not r.partial]
        if not self.history:
            return start
        if not finite:
            # Every run diverged: smaller step sizes and decays (Theorem 3).
            shrink = np.where(self._log, _MARGIN, 0.0)
            lowest = np.min(np.array(told), axis=0)
            return self._separated(lowest - shrink, told)
        x, y, g = self._observations()
        step = self._descent_step(g)
        if step is not None and self._far_from(step, told):
            return step
        has_gradient = any(r.gradients is not None and r.finite for r in finite)
        if len(finite) < (2 if has_gradient else self.n_initial):
            return self._design_point(told)
        gp = self._fit(x, y, g)
        return self._maximise_acquisition(gp, told, finite)

    def _observations(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The GP's data: ``z``, warped values (diverged at the ceiling) and ``z``-gradients.

        Partial runs are left out (their values are not comparable); a gradient that
        is missing, non-finite or chaotic is a NaN row.
        """
        records = [r for r in self.history if not r.partial]
        finite = np.array([math.isfinite(r.value) for r in records])
        raw = np.array([r.value if math.isfinite(r.value) else 0.0 for r in records])
        values = raw[finite]
        warped_finite, slope = _warp(values)
        spread = float(values.max() - values.min()) if values.size > 1 else 0.0
        level, scale = _warp_level(values)
        ceiling = level + scale
        x = np.array([self._z(r.values) for r in records])
        y = np.full(len(records), ceiling)
        y[finite] = warped_finite
        g = np.full(x.shape, np.nan)
        limit = _MAX_GRADIENT_RATIO * max(spread, 1e-300)
        for i, j in enumerate(np.flatnonzero(finite)):
            record = records[j]
            if record.gradients is None or not record.finite:
                continue
            grad = self._z_gradient(record) * slope[i]
            if spread <= 0.0 or np.all(np.abs(grad) <= limit):
                g[j] = grad
        return x, y, g

    def _fit(self, x: FloatArray, y: FloatArray, g: FloatArray) -> GaussianProcess:
        """The GP, refitted with the smooth prior and outlier slopes dropped when noisy."""
        gp = fit_gaussian_process(
            x,
            y,
            g,
            lengthscale_prior=_LENGTHSCALE_PRIOR,
            max_lengthscale=_MAX_LENGTHSCALE,
        )
        if gp.params.value_noise >= _NOISY:
            gp = fit_gaussian_process(
                x,
                y,
                _smooth_slopes(y, g),
                lengthscale_prior=_NOISY_LENGTHSCALE_PRIOR,
                max_lengthscale=_NOISY_MAX_LENGTHSCALE,
            )
        return gp

    def _descent_step(self, believable: FloatArray) -> FloatArray | None:
        """The next step of the descent design, or ``None`` once it has ended.

        From the start, each step goes along the normalised negative hypergradient
        (max-norm ``log 3``, then twice as far each time: factors 3, 9, 81 in a step
        size), as long as every step landed where it was sent, improved the value and
        still descends along its direction, with a slope not flattened below
        ``_DESCENT_FLAT`` of the steepest seen (the one-dimensional model's descent,
        see :mod:`~l2l_tune.meta.model`). A far start (two decades off) is then
        crossed in a few runs instead of the GP's small steps near its data. A
        missing, chaotic or non-finite hypergradient, a diverged or partial run, or
        a record from elsewhere (a parallel worker) ends it for good.

        Args:
            believable: The ``z``-gradient rows of :meth:`_observations` (NaN: not
                believable), aligned with the non-partial records.
        """
        records = [r for r in self.history if not r.partial]
        if len(records) != len(self.history):
            return None
        expected: FloatArray | None = None
        direction = np.zeros(len(self._units))
        size, steepest, previous = _MARGIN / 2.0, 0.0, math.inf
        for i, record in enumerate(records):
            z = self._z(record.values)
            if not math.isfinite(record.value) or not np.isfinite(believable[i]).all():
                return None
            grad = self._z_gradient(record)
            if expected is not None:
                slope = float(grad @ direction)
                if (
                    float(np.max(np.abs(z - expected))) > _MIN_SEPARATION
                    or not record.value < previous
                    or not slope < -_DESCENT_FLAT * steepest
                ):
                    return None
            norm = float(np.max(np.abs(grad)))
            if not (math.isfinite(norm) and norm > 0.0):
                return None
            direction = -grad / norm
            steepest = max(steepest, norm)
            size *= 2.0
            expected = np.clip(z + size * direction, self._low, self._high)
            previous = record.value
            if float(np.max(np.abs(expected - z))) <= _MIN_SEPARATION:
                return None  # pressed against the bounds
        return expected

    def _design_point(self, told: list[FloatArray]) -> FloatArray:
        """The first Sobol point over the space that is not told yet."""
        d = len(self._units)
        sobol = qmc.Sobol(d, scramble=True, seed=self.seed)
        needed = max(8, 2 * (len(told) + 1))
        unit = sobol.random_base2(math.ceil(math.log2(needed)))  # powers of 2 keep the balance
        points = self._low + unit * (self._high - self._low)
        for point in points:
            if self._far_from(point, told):
                return point
        return points[-1]

    def _trust_region(self, told_finite: FloatArray) -> tuple[FloatArray, FloatArray]:
        lo = np.maximum(told_finite.min(axis=0) - _MARGIN, self._low)
        hi = np.minimum(told_finite.max(axis=0) + _MARGIN, self._high)
        return lo, hi

    def _maximise_acquisition(
        self,
        gp: GaussianProcess,
        told: list[FloatArray],
        finite: list[VectorRecord],
    ) -> FloatArray:
        """The maximiser of log EI in the trust region, away from every told point."""
        told_finite = np.array([self._z(r.values) for r in finite])
        lo, hi = self._trust_region(told_finite)
        mean_told, _ = gp.predict(told_finite)
        incumbent = float(mean_told.min())
        best = told_finite[int(np.argmin(mean_told))]
        step = self._extrapolation_step(gp, best, told_finite)
        if step is not None and self._far_from(step, told):
            return step
        d = len(lo)
        rng = np.random.default_rng(self.seed)
        sobol = qmc.Sobol(d, scramble=True, seed=rng)
        global_points = lo + sobol.random(_GLOBAL_CANDIDATES) * (hi - lo)
        local_points = np.clip(
            best + _LOCAL_SD * rng.standard_normal((_LOCAL_CANDIDATES, d)), lo, hi
        )
        candidates = np.vstack([global_points, local_points])

        def score(points: FloatArray) -> FloatArray:
            mean, variance = gp.predict(points)
            return log_expected_improvement(mean, variance, incumbent)

        scores = score(candidates)
        order = np.argsort(-np.where(np.isfinite(scores), scores, -np.inf), kind="stable")
        results: list[tuple[float, FloatArray]] = []
        for index in order[:_REFINED]:
            found = scipy.optimize.minimize(
                lambda z: -float(score(z[None, :])[0]),
                candidates[index],
                method="L-BFGS-B",
                bounds=list(zip(lo, hi, strict=True)),
                options={"maxiter": 30},
            )
            point = np.clip(np.asarray(found.x, dtype=np.float64), lo, hi)
            value = float(score(point[None, :])[0])
            results.append((value if math.isfinite(value) else -math.inf, point))
        results += [(float(scores[i]), candidates[i]) for i in order]
        for _, point in sorted(results, key=lambda item: -item[0]):
            if self._far_from(point, told):
                return point
        return self._design_point(told)

    def _extrapolation_step(
        self, gp: GaussianProcess, best: FloatArray, told_finite: FloatArray
    ) -> FloatArray | None:
        """``log 3`` units from the incumbent along the posterior mean's descent, when that
        leaves the explored box and the slope is clear of the gradient noise; else ``None``.

        A stationary GP's mean returns to its constant away from the data, so expected
        improvement creeps outward in small steps while the optimum lies decades away
        (measured: from two decades off, 0.1–0.3 units a run after one misleading noisy
        hypergradient ended the descent). When the incumbent sits on the edge of what
        was explored and the model's own slope there, more than twice the learned
        gradient noise, points outward, the model steps out as the descent would.
        Inside the explored box (near an optimum) the acquisition decides.
        """
        slope = gp.mean_gradient(best[None, :])[0]
        size = float(np.max(np.abs(slope)))
        if not (math.isfinite(size) and size > 2.0 * math.sqrt(gp.gradient_noise)):
            return None
        step = np.clip(best - _MARGIN * slope / size, self._low, self._high)
        below = told_finite.min(axis=0) - _MARGIN / 2.0
        above = told_finite.max(axis=0) + _MARGIN / 2.0
        return step if bool(np.any((step < below) | (step > above))) else None

    @staticmethod
    def _far_from(point: FloatArray, told: list[FloatArray]) -> bool:
        return all(float(np.max(np.abs(point - z))) > _MIN_SEPARATION for z in told)

    def _separated(self, point: FloatArray, told: list[FloatArray]) -> FloatArray:
        point = np.clip(point, self._low, self._high)
        return point if self._far_from(point, told) else self._design_point(told)

    # ------------------------------------------------------------------ the recommendation
    def estimate(self) -> dict[str, float]:
        """The values to train with: the told point with the lowest ``μ + 2σ`` (noisy fit)
        or the best told value (exact fit), never an unexplored guess.

        Before any finite run it is the next proposal.
        """
        finite = [r for r in self.history if math.isfinite(r.value) and not r.partial]
        if len(finite) < 2:
            return dict(finite[0].values) if finite else self.ask()
        with _single_blas_thread():
            x, y, g = self._observations()
            gp = self._fit(x, y, g)
            if gp.params.value_noise <= _EXACT_NOISE:
                return dict(min(finite, key=lambda r: r.value).values)
            points = np.array([self._z(r.values) for r in finite])
            mean, variance = gp.predict(points)
        bound = mean + _RECOMMEND_KAPPA * np.sqrt(variance)
        return dict(finite[int(np.argmin(bound))].values)
