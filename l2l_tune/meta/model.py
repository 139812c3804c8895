"""A model-based meta-optimizer for noisy, rugged meta-objectives.

:class:`~l2l_tune.meta.bracket.BracketingMetaOptimizer` trusts the sign of every
meta-gradient, which is right for the exact, unimodal objectives of Claim 1 and
wrong for real training runs (see the guide's section 6): their meta-objective is
noisy (sampled tasks, SGD), rugged, and at large step sizes chaotic, with
meta-gradients of 1e9…inf (Theorem 3 in practice), followed by a flat, truncated
plateau with a zero gradient past divergence. :class:`GaussianProcessMetaOptimizer`
instead fits a Gaussian process (:mod:`l2l_tune.meta.surrogate`) to the values
*and* the believable meta-gradients on ``x = log η`` and proposes the maximiser of
the expected improvement; the recommendation is the minimiser of the posterior
mean, not the best noisy observation.

The pieces, each a small function of the told history:

1. **Clean-up** (:meth:`GaussianProcessMetaOptimizer._analyse`): a non-finite
   value is a diverged run; the smallest such step size above the best finite
   point is a *divergence barrier*, no proposal is made at or above it, and the
   failed points are imputed as the worst finite value seen. Values above a
   robust level (median plus its distance to the minimum) are compressed by
   ``asinh``, so that a few astronomically large losses do not set the scale. A
   gradient is dropped (its value kept) when it is missing, non-finite, exactly 0
   (a truncated plateau says nothing) or implausibly large against the spread of
   the values (a chaotic run, Theorem 3), and every gradient at or above the
   smallest step size with an infinite or implausibly large one (the chaos
   threshold: above it a finite meta-gradient is chaotic too).
2. **Surrogate**: a Matérn-5/2 GP with separate, learned value and gradient
   noise (the gradient noise at least what the value noise implies, see
   :mod:`l2l_tune.meta.surrogate`), on at most ``max_fit_records`` records (those
   nearest the incumbent plus a spread of the rest). When the global fit finds the
   values noisy it is refitted with a smooth lengthscale prior.
3. **Acquisition**: expected improvement over the best posterior mean at an
   observed point (noise-robust), maximised on a dense grid of the
   barrier-limited domain and refined by zooming on the best local maxima.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import scipy.special
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from .._validation import check_int, check_positive
from .base import MetaOptimizer, MetaRecord
from .surrogate import GaussianProcess, GPHyperparameters, clear_fit_cache, fit_gaussian_process

__all__ = ["GaussianProcessMetaOptimizer", "expected_improvement", "log_expected_improvement"]

FloatArray = NDArray[np.float64]
#: Hyperparameters ``(global, local)`` to condition on; ``None``: fit them.
_Hyperparameters = tuple[GPHyperparameters | None, GPHyperparameters | None]

#: Smallest distance in ``log η`` between a proposal and a told (or failed, or pending) point.
_MIN_SEPARATION = 1e-6
#: A gradient implying that the whole spread of the values is crossed within
#: ``1/_MAX_GRADIENT_RATIO`` in ``log η`` is treated as chaotic and dropped.
_MAX_GRADIENT_RATIO = 1e4
#: A learned value-noise variance (standardised) at or below this: the objective is exact.
_EXACT_NOISE = 1e-6
#: Fractional part of the golden ratio: a 1-D low-discrepancy sequence for the initial design.
_GOLDEN = 0.6180339887498949
#: Log-normal prior on the lengthscale in ``log η``: median 0.5 (a factor 1.65 in η), sd 1
#: in log. Without it a long run of smooth points below η* (the slow side of Claim 1)
#: makes the fit overconfident across the gap up to the divergence wall.
_LENGTHSCALE_PRIOR = (0.5, 1.0)
#: Largest lengthscale in ``log η`` (a factor e): the same overconfidence, bounded hard.
_MAX_LENGTHSCALE = 1.0
#: The lengthscale prior and bound on a *noisy* objective (a fit with value noise of at
#: least ``_NOISY``): median 2 in ``log η`` (a factor 7.4), sd 0.5, at most 5. With ten to
#: thirty noisy runs the marginal likelihood cannot tell a short-lengthscale signal from the
#: noise, and the short fit wiggles through lucky runs (measured on digits studies: the
#: recommendation jumped to a lucky run at η = 0.73, 15 % above the optimal expected loss,
#: with ℓ = 0.14 and half of the value noise the replicates showed). The expected loss of
#: a training run is smooth over factors of a few in η; Optuna's ``GPSampler`` encodes the
#: same belief in its inverse-lengthscale prior. (Median 1, sd 0.5, at most 3 let the jump
#: back on one of 16 digits studies.) Only the global model: the local one resolves the
#: corner at η* of exact objectives, whose fits can find some value noise there.
_NOISY_LENGTHSCALE_PRIOR = (2.0, 0.5)
_NOISY_MAX_LENGTHSCALE = 5.0
#: On a noisy objective, slopes (per unit of ``log η``) steeper than this many standard
#: deviations of the values are outliers (see ``_smooth_slopes``).
_NOISY_MAX_SLOPE = 10.0
#: Spread of the told values above which they are compressed by a signed log.
_MAX_VALUE_SPREAD = 1e8
#: Width of the confidence bound that keeps the recommendation away from unexplored guesses.
_RECOMMEND_BETA = 2.0
#: On noisy objectives the recommendation minimises ``μ + κσ`` (a cautious choice).
_RECOMMEND_KAPPA = 1.0
#: First step of the descent design in ``log η`` (a factor 3); each further step doubles.
_DESCENT_STEP = math.log(3.0)
#: The descent stops where the slope has flattened to this fraction of the steepest seen.
_DESCENT_FLAT = 0.25
#: Proposals stay within this distance in ``log η`` (a factor 3) of the told step sizes: the
#: explored range grows by at most that much per proposal. With the lengthscale capped
#: at 1 the GP's uncertainty far from the data is the prior's, and EI would spend a noisy
#: study's runs at the domain's edges; step-size objectives are unimodal at that scale.
_EXPLORE_MARGIN = math.log(3.0)


_BLAS_LIMITED = threading.local()


@cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


@contextmanager
def _single_blas_thread() -> Iterator[None]:
    """Run the GP's linear algebra on one BLAS thread.

    The matrices are at most ``2·max_fit_records`` wide: threading them only adds
    synchronisation, and on a loaded 2-core machine OpenBLAS's spinning threads made
    one ``ask()`` 10× slower (measured: 540 ms vs 47 ms at 20 records).
    """
    if getattr(_BLAS_LIMITED, "active", False):
        yield  # already limited by an enclosing call (threadpoolctl's switch costs ~0.2 ms)
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        _BLAS_LIMITED.active = True
        try:
            yield
        finally:
            _BLAS_LIMITED.active = False


# ---------------------------------------------------------------------- acquisition
def log_expected_improvement(
    mean: FloatArray, variance: FloatArray, incumbent: float
) -> FloatArray:
    """``log EI`` for minimisation, accurate where ``EI`` itself underflows.

    ``EI = σ·h(z)`` with ``z = (incumbent − μ)/σ`` and ``h(z) = zΦ(z) + φ(z)``.
    For ``z < 0``, ``h(z) = φ(z)·(1 + z·√(π/2)·erfcx(−z/√2))`` avoids the
    underflow of ``Φ``; below ``z = −1e3`` the asymptotic ``h ≈ φ(z)/z²`` is
    used (the cancellation in ``1 + z·r(z)`` costs ``z²·ε`` relative). Points
    with zero variance get ``log(max(incumbent − μ, 0))``.

    Args:
        mean: Posterior means.
        variance: Posterior variances of the latent function.
        incumbent: The value to improve on.

    Returns:
        ``log EI`` (``-inf`` where no improvement is possible).
    """
    mean = np.asarray(mean, dtype=np.float64)
    sd = np.sqrt(np.maximum(np.asarray(variance, dtype=np.float64), 0.0))
    # Every branch is evaluated everywhere (one pass of ufuncs, no masked copies) and the
    # right one selected; the discarded ones may overflow, hence the errstate.
    with np.errstate(all="ignore"):
        positive = sd > 0.0
        safe_sd = np.where(positive, sd, 1.0)
        z = np.where(positive, (incumbent - mean) / safe_sd, 0.0)
        log_phi = -0.5 * z * z - 0.5 * math.log(2.0 * math.pi)
        upper = np.log(z * scipy.special.ndtr(z) + np.exp(log_phi))
        ratio = math.sqrt(math.pi / 2.0) * scipy.special.erfcx(-z / math.sqrt(2.0))
        middle = log_phi + np.log(np.maximum(1.0 + z * ratio, 1e-300))
        lower = log_phi - 2.0 * np.log(-z)
        log_h = np.where(z >= 0.0, upper, np.where(z >= -1e3, middle, lower))
        out = np.where(positive, np.log(safe_sd) + log_h, -np.inf)
        flat = ~positive & (mean < incumbent)
        if flat.any():
            out[flat] = np.log(incumbent - mean[flat])
    return out


def expected_improvement(mean: FloatArray, variance: FloatArray, incumbent: float) -> FloatArray:
    """``EI = E[max(incumbent − f, 0)]`` under ``f ~ N(mean, variance)``."""
    return np.exp(log_expected_improvement(mean, variance, incumbent))


def _zoom(
    score: Any, grid: FloatArray, values: FloatArray, lo: float, hi: float, *, top: int = 3
) -> tuple[float, float]:
    """Maximise ``score`` (vectorised) near the ``top`` best local maxima of a grid.

    Each candidate's bracket ``[x_{i−1}, x_{i+1}]`` is re-gridded with 17 points
    three times (the spacing shrinks 8-fold each time), all candidates in one
    vectorised call per level. Returns ``(x, score(x))`` of the best point.
    """
    n = len(grid)
    finite = np.isfinite(values)
    if not finite.any():
        return float(grid[0]), float(values[0])
    padded = np.concatenate([[-np.inf], np.where(finite, values, -np.inf), [-np.inf]])
    local = (padded[1:-1] >= padded[:-2]) & (padded[1:-1] >= padded[2:]) & finite
    candidates = np.flatnonzero(local)
    candidates = candidates[np.argsort(-values[candidates], kind="stable")][:top]
    best_x, best_value = float(grid[candidates[0]]), float(values[candidates[0]])
    step = (grid[-1] - grid[0]) / max(n - 1, 1)
    centres = grid[candidates].astype(np.float64)
    offsets = np.linspace(-1.0, 1.0, 17)
    for _ in range(3):
        points = np.clip(centres[:, None] + step * offsets[None, :], lo, hi)
        scores = np.asarray(score(points.ravel()), dtype=np.float64).reshape(points.shape)
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        index = np.argmax(scores, axis=1)
        centres = points[np.arange(len(points)), index]
        level_best = scores[np.arange(len(points)), index]
        k = int(np.argmax(level_best))
        if level_best[k] > best_value:
            best_x, best_value = float(centres[k]), float(level_best[k])
        step /= 8.0
    return best_x, best_value


# ---------------------------------------------------------------------- state
@dataclass
class _Model:
    """A fitted GP and the interval of ``log η`` it is trusted on."""

    gp: GaussianProcess
    lo: float
    hi: float
    observed_x: FloatArray  # finite observations inside [lo, hi]
    incumbent: float  # best posterior mean at one of them (warped units)
    exact: bool  # learned value noise at the jitter floor


@dataclass
class _State:
    """Everything :meth:`GaussianProcessMetaOptimizer._analyse` derives from the history."""

    lo: float  # proposal domain in log η (barrier-limited)
    hi: float
    told_x: FloatArray  # every told step size, in log η (η > 0 only)
    failed_x: FloatArray  # diverged step sizes
    finite_x: FloatArray  # step sizes with a finite value
    finite_values: FloatArray  # their raw values
    barrier: float | None
    # Slopes d value/d log η of the finite records (aligned with finite_x; NaN where
    # the gradient is missing or not believable).
    descent_slope: FloatArray = field(default_factory=lambda: np.zeros(0))
    models: list[_Model] = field(default_factory=list)  # [global, local] (or just global)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def gp(self) -> GaussianProcess | None:
        """The global GP (``None`` during the initial design)."""
        return self.models[0].gp if self.models else None

    @property
    def exact(self) -> bool:
        """Whether the model nearest the optimum found the values exact."""
        return bool(self.models) and self.models[-1].exact

    @property
    def descent_seen(self) -> bool:
        """Whether any finite record carries a believable meta-gradient."""
        return bool(np.isfinite(self.descent_slope).any())

    @property
    def descent_bracketed(self) -> bool:
        """Whether believable meta-gradients of both signs bracket a minimum."""
        slope = self.descent_slope[np.isfinite(self.descent_slope)]
        return bool((slope < 0.0).any() and (slope > 0.0).any())

    @property
    def descent_flattened(self) -> bool:
        """Whether a descent of one sign reached a point where the slope has flattened.

        At the far end of the descent the believable slope is at most
        ``_DESCENT_FLAT`` of the steepest one seen: the minimum is near that point
        (within the noise of one hypergradient), and stepping twice as far again only
        lands past it, on the rising side or the divergence plateau (measured on
        digits studies: from 0.1 and 0.3, where the slope had dropped to 2 % of the
        first, the descent went on to 2.7, the plateau).
        """
        usable = np.isfinite(self.descent_slope)
        if int(usable.sum()) < 2:
            return False
        slope, x = self.descent_slope[usable], self.finite_x[usable]
        far = _descent_far_end(x, slope)
        return far is not None and bool(
            abs(slope[far]) <= _DESCENT_FLAT * float(np.abs(slope).max())
        )


def _descent_far_end(x: FloatArray, slope: FloatArray) -> int | None:
    """Index of the point furthest along a descent whose slopes all share a sign, else None.

    Negative slopes descend towards larger ``x``, positive ones towards smaller.
    """
    if slope.size == 0:
        return None
    if np.all(slope < 0.0):
        return int(np.argmax(x))
    if np.all(slope > 0.0):
        return int(np.argmin(x))
    return None


def _smooth_slopes(values: FloatArray, slopes: FloatArray) -> FloatArray:
    """``slopes`` with those a smooth noisy objective cannot have set to NaN (no gradient).

    On a noisy objective (the smooth-prior fit) a slope steeper than
    ``_NOISY_MAX_SLOPE`` standard deviations of the values per unit of ``log η`` is an
    outlier: with a lengthscale of about 2 the whole spread is crossed over about one
    unit. Near the edge of stability single SGD runs give such slopes while their
    values look ordinary (measured on a digits study: η·F' = −0.029 at η = 0.9, eleven
    times the spread of all values per unit of log η, forced a lengthscale of 0.31, and
    the posterior mean dipped below every observation at η ≈ 1.03, which was
    recommended for a run at 54 % regret).
    """
    limit = _NOISY_MAX_SLOPE * float(np.std(values))
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(slopes) <= limit, slopes, np.nan)


def _warp_level(values: FloatArray) -> tuple[float, float]:
    """``(c, s)`` of :func:`_warp` for finite ``values``: values above ``c`` saturate
    towards its ceiling ``c + s`` (where a diverged run belongs)."""
    low, high = float(values.min()), float(values.max())
    median = float(np.median(values))
    spread = max(median - low, 1e-3 * (high - low), 1e-12 * (1.0 + abs(low)))
    return median + spread, spread


def _warp(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Saturate values above a robust level; return ``(warped, d warped/d value)``.

    With ``m`` the median and ``s = m − min`` (floored), values up to ``c = m + s``
    are kept and larger ones become ``c + s·tanh((y − c)/s)``: monotone, smooth
    (``C¹``), the identity where the optimum lives, and bounded by ``c + s``. The
    huge losses of chaotic or nearly diverged runs (Theorem 3) and the steep wall
    of the meta-objective past the divergence threshold then neither set the
    scale of the standardised values nor demand a short lengthscale everywhere;
    their gradients are scaled by the vanishing slope of the warp.
    """
    level, spread = _warp_level(values)
    with np.errstate(all="ignore"):
        z = np.maximum(values - level, 0.0) / spread
        z = np.where(np.isfinite(z), z, 1e300)
        warped = np.where(values > level, level + spread * np.tanh(z), values)
        slope = np.where(values > level, 1.0 / np.cosh(np.minimum(z, 700.0)) ** 2, 1.0)
    return warped, slope


# ---------------------------------------------------------------------- refit schedule
#: Up to this many told records the hyperparameters are refitted at every record.
_REFIT_ALL_UP_TO = 20
#: Beyond it, refit points grow geometrically by this factor (at least 5 records apart).
_REFIT_GROWTH = 1.25
#: The schedule applies when the local model's standardised value-noise variance is at least
#: this: the noise then dominates the records near the optimum, and the hyperparameters,
#: fixed mostly by it, change slowly with more records.
_NOISY = 1e-2
#: Most memoised hyperparameters of refit points (least recently used dropped first).
_ANCHOR_CACHE_SIZE = 256
_ANCHOR_CACHE: OrderedDict[bytes, _Hyperparameters] = OrderedDict()
_ANCHOR_LOCK = threading.Lock()


def _refit_point(n: int) -> int:
    """The last refit point ``≤ n``: ``n`` up to 20, then 20, 25, 31, 38, 47, 58, 72, 90, …

    The hyperparameters of a history of ``n`` records are those fitted to its first
    ``_refit_point(n)`` records; between refit points only the posterior (one
    Cholesky factor) is recomputed, with all records.
    """
    if n <= _REFIT_ALL_UP_TO:
        return n
    point = _REFIT_ALL_UP_TO
    while True:
        following = max(point + 5, int(point * _REFIT_GROWTH))
        if following > n:
            return point
        point = following


def _records_bytes(records: list[MetaRecord]) -> bytes:
    """The exact bytes of ``(η, value, grad, partial)`` of each record (``None`` grad: NaN)."""
    table = np.array(
        [
            (
                r.eta,
                r.value,
                math.nan if r.grad is None else r.grad,
                1.0 if getattr(r, "partial", False) else 0.0,
            )
            for r in records
        ],
        dtype=np.float64,
    )
    return table.tobytes()


def clear_caches() -> None:
    """Forget every memoised fit (GP hyperparameters): results do not change, only time."""
    with _ANCHOR_LOCK:
        _ANCHOR_CACHE.clear()
    clear_fit_cache()


class GaussianProcessMetaOptimizer(MetaOptimizer):
    """Bayesian optimisation of the meta-objective on ``x = log η`` (1-D).

    Fits the GP of :mod:`l2l_tune.meta.surrogate` to the told values and the
    believable meta-gradients (``dvalue/d log η = η·grad``), and proposes the
    maximiser of the expected improvement. Meant for the log meta-objective of
    Theorem 4, whose meta-gradient is polynomially bounded where the run is
    stable, and robust to what real runs add: noise, NaN/inf (diverged runs),
    zero gradients (truncated plateaus) and chaotic gradients (Theorem 3). See
    the module docstring for the pipeline.

    * **Initial design.** ``eta0``; then, while every finite record carries a
      believable meta-gradient of one sign, a *descent design* that steps past the
      extreme told point by factors 3, 9, 81, … in the descending direction (a
      line search's expansion; :meth:`_descent`). Once gradients of both signs
      bracket a minimum the GP takes over; otherwise (no gradients, a chaotic
      one, a failure) ``n_initial − 1`` points of a shifted golden-ratio
      sequence over the (barrier-limited) domain in ``log η`` follow; the
      ``k``-th told record's successor is a pure function of ``k`` and ``seed``.
      The design continues while fewer than two distinct finite values exist.
    * **Proposal.** The EI maximiser over the domain below the divergence
      barrier and within a factor 3 of the told step sizes (the explored range
      grows by at most that per proposal). With ``trend="quadratic"`` the global
      GP's prior mean is a convex quadratic in ``log η``
      (:func:`~l2l_tune.meta.surrogate.fit_convex_quadratic_trend`). On an
      exact objective (learned value noise at the jitter floor) points within
      ``1e-6`` in ``log η`` of a told one are never proposed; a noisy one may be
      replicated when EI says so. When EI has fallen below
      ``tol`` (relative to the value scale) on an exact objective and the
      recommendation has not been evaluated, it is proposed (a confirmation
      step), so that ``converged`` only ever vouches for an evaluated point.
    * **Recommendation** (:meth:`estimate`). The minimiser of the posterior mean
      (on noisy values of ``μ + σ``, which prefers well-sampled step sizes to one
      lucky run) between the smallest and largest finite observations, unless its upper
      confidence bound ``μ + 2σ`` is above that of the observed point with the
      lowest posterior mean (a poorly determined guess): then that point.
    * **Parallel proposals** (:meth:`_spread`). Pending step sizes are added as
      fantasies at their posterior mean ("kriging believer") and EI is
      re-maximised, so that concurrent workers get different step sizes.

    Proposals and estimates are cached per history (by identity of the told
    records); the cache never changes what is computed.

    * **Refit schedule.** Hyperparameters are fitted at every record up to 20, then
      at 25, 31, 38, 47, 58, … records (×1.25), each time on the history's first
      that many records; in between only the posterior is recomputed, on all
      records, with them. So the proposal stays a function of the told sequence
      (up to 20 records, of the set). Objectives whose local model finds the
      values (nearly) exact are refitted at every record. Fits are memoised
      process-wide by the exact data (:func:`clear_caches`), never changing results.
    * **Cost** (1-D noisy bowl, 2 loaded cores, CPU time): cold ``ask`` 36/39/42 ms
      at 20/100/200 records (was 47/50/62); 8.8 ms per step over 200
      ``from_history`` + ``ask`` steps (was 41).

    Args:
        eta0: First step size, ``> 0``.
        bounds: Optional ``(low, high)``; the domain is ``[low, high]`` (a
            ``low`` of 0 becomes ``high·1e-6``), else ``[eta0·1e-4, eta0·10]``.
        n_initial: Records in the initial design, ``eta0`` included, ``≥ 1``.
        tol: Convergence threshold on the largest expected improvement,
            relative to the scale of the values, ``> 0``.
        seed: Integer ``≥ 0`` that shifts the initial design.
        max_fit_records: Most records the GP is fitted on, ``≥ 8``: the nearest
            ``3/4`` to the incumbent in ``log η`` plus a spread of the rest.
        grid_size: Points of the acquisition grid, ``≥ 16``.
        trend: The global GP's prior mean: ``"constant"`` (the default) or
            ``"quadratic"``, a convex quadratic in ``log η`` fitted to the records: far
            from them the posterior rises, so EI does not spend runs at the domain's
            edges (a user's digits study: fewer wasted runs), but it assumes one basin
            and, on MNIST TbV (a good basin near η = 0.03, an overfitting hump, a
            chance-level chaotic plateau near 1), it kept the search on the plateau
            (seed 3: η = 1.13, test accuracy 0.51; constant: 0.032, 0.830).

    Raises:
        ValueError: for a bad ``eta0``, ``bounds``, ``n_initial``, ``tol``,
            ``seed``, ``max_fit_records``, ``grid_size`` or ``trend`` (naming it).
    """

    name = "model"
    needs_gradients = False

    def __init__(
        self,
        eta0: float = 0.1,
        *,
        bounds: tuple[float, float] | None = None,
        n_initial: int = 4,
        tol: float = 1e-8,
        seed: int = 0,
        max_fit_records: int = 24,
        local_records: int = 10,
        grid_size: int = 512,
        trend: str = "constant",
    ) -> None:
        super().__init__(eta0, bounds=bounds)
        self.n_initial = check_int(n_initial, "n_initial", 1)
        self.tol = check_positive(tol, "tol")
        self.seed = check_int(seed, "seed", 0)
        self.max_fit_records = check_int(max_fit_records, "max_fit_records", 8)
        self.local_records = check_int(local_records, "local_records", 4)
        self.grid_size = check_int(grid_size, "grid_size", 16)
        if trend not in ("constant", "quadratic"):
            raise ValueError(f"trend must be 'constant' or 'quadratic', got {trend!r}")
        self.trend = trend
        if self.bounds is not None:
            low, high = self.bounds
            low = low if low > 0.0 else high * 1e-6
        else:
            low, high = self.eta0 * 1e-4, self.eta0 * 1e1
        self.domain: tuple[float, float] = (low, high)
        self._offset = float(np.random.default_rng(self.seed).random())
        self._cached: tuple[list[MetaRecord], _State] | None = None

    # ------------------------------------------------------------------ analysis
    def _state(self) -> _State:
        history = self.history
        if self._cached is not None:
            records, state = self._cached
            if len(records) == len(history) and all(
                a is b for a, b in zip(records, history, strict=True)
            ):
                return state
        with _single_blas_thread():
            anchor = _refit_point(len(history))
            params = self._anchor_hyperparameters(history[:anchor])
            state = self._analyse(history, params)
        self._cached = (list(history), state)
        return state

    def _anchor_hyperparameters(self, prefix: list[MetaRecord]) -> _Hyperparameters:
        """The hyperparameters ``(global, local)`` fitted to ``prefix`` (the refit schedule).

        ``prefix`` is the history up to the last refit point (:func:`_refit_point`);
        when it is the whole history nothing is fixed (``(None, None)``) and the
        analysis fits. The schedule is for noisy objectives: unless the prefix's local
        model (the records nearest its incumbent) finds the noise variance at least
        ``1e-2`` of the standardised values', every history is fitted afresh.
        Memoised under the exact bytes of the records and of everything the analysis
        reads from ``self``.
        """
        if len(prefix) == len(self.history):
            return None, None
        key = hashlib.blake2b(
            repr(
                (
                    self.eta0,
                    self.bounds,
                    self.domain,
                    self.max_fit_records,
                    self.local_records,
                    self.trend,
                )
            ).encode()
            + _records_bytes(prefix),
            digest_size=20,
        ).digest()
        with _ANCHOR_LOCK:
            found = _ANCHOR_CACHE.get(key)
            if found is not None:
                _ANCHOR_CACHE.move_to_end(key)
                return found
        state = self._analyse(prefix, (None, None))
        params = [m.gp.params for m in state.models] + [None, None]
        result: _Hyperparameters = (params[0], params[1])
        noisy = len(state.models) > 1 and state.models[-1].gp.params.value_noise >= _NOISY
        if not noisy:
            # Exact or nearly exact values: the optimum is a corner at the divergence wall
            # (Theorem 3) that only freshly fitted models resolve to the precision it allows.
            result = (None, None)
        with _ANCHOR_LOCK:
            _ANCHOR_CACHE[key] = result
            while len(_ANCHOR_CACHE) > _ANCHOR_CACHE_SIZE:
                _ANCHOR_CACHE.popitem(last=False)
        return result

    def _analyse(self, history: list[MetaRecord], params: _Hyperparameters) -> _State:
        """Clean the history, fit the surrogate and find the barrier-limited domain.

        ``params``: hyperparameters ``(global, local)`` to condition on instead of
        fitting (``None``: fit).
        """
        # Partial records (pruned runs, if the base class marks them) are not comparable
        # values: they are not modelled, but their step sizes are not proposed again.
        partial = [r.eta for r in history if getattr(r, "partial", False) and r.eta > 0.0]
        records = sorted(
            (r for r in history if r.eta > 0.0 and not getattr(r, "partial", False)),
            key=lambda r: (
                r.eta,
                math.isnan(r.value),
                0.0 if math.isnan(r.value) else r.value,
                r.grad is None or math.isnan(r.grad),
                0.0 if r.grad is None or math.isnan(r.grad) else r.grad,
            ),
        )
        eta = np.array([r.eta for r in records], dtype=np.float64)
        x = np.log(eta) if len(eta) else np.zeros(0)
        raw = np.array([r.value for r in records], dtype=np.float64)
        grad = np.array([np.nan if r.grad is None else r.grad for r in records], dtype=np.float64)
        finite = np.isfinite(raw)
        failed = ~finite
        barrier: float | None = None
        if finite.any():
            best_index = int(np.flatnonzero(finite)[np.argmin(raw[finite])])
            above = failed & (eta > eta[best_index])
        else:
            best_index = -1
            above = failed
        if above.any():
            barrier = float(eta[above].min())
        lo, hi = self._proposal_domain(barrier)
        told_x = np.concatenate([x, np.log(np.array(partial, dtype=np.float64))])
        state = _State(lo, hi, told_x, x[failed], x[finite], raw[finite], barrier)
        # The chaos threshold: the smallest step size whose meta-gradient is infinite or
        # implausibly large (Theorem 3). Above it a finite meta-gradient is as chaotic as
        # the tangent recursion it came from, however plausible its size: none is believed.
        below_chaos = np.ones(int(finite.sum()), dtype=bool)
        if finite.any():
            with np.errstate(all="ignore"):
                slope = eta[finite] * grad[finite]
                scale = max(float(np.ptp(raw[finite])), float(np.abs(raw[finite]).max()))
                chaotic = np.isinf(slope) | (
                    np.isfinite(slope) & (np.abs(slope) > _MAX_GRADIENT_RATIO * max(scale, 1e-300))
                )
            if chaotic.any():
                below_chaos = x[finite] < float(x[finite][chaotic].min())
            usable = np.isfinite(slope) & (slope != 0.0) & ~chaotic & below_chaos
            state.descent_slope = np.where(usable, slope, np.nan)
        if np.unique(x[finite]).size < 2:
            return state

        values = raw[finite]
        compress: float | FloatArray = 1.0
        with np.errstate(all="ignore"):
            if not np.isfinite(np.ptp(values)) or np.ptp(values) > _MAX_VALUE_SPREAD:
                # Values spanning many orders of magnitude (the plain last-loss objective,
                # Theorem 3; or its negation under maximisation): a monotone signed log
                # keeps the order and the minimiser, and makes the spread finite.
                compress = 1.0 / (1.0 + np.abs(values))
                values = np.sign(values) * np.log1p(np.abs(values))
        warped, slope = _warp(values)
        slope = slope * compress
        spread = float(warped.max() - warped.min())
        with np.errstate(all="ignore"):
            g = eta[finite] * grad[finite] * slope  # d(warped value)/d log η
        limit = _MAX_GRADIENT_RATIO * max(spread, 1e-300)
        believable = np.isfinite(g) & (g != 0.0) & (np.abs(g) <= limit) & below_chaos
        g = np.where(believable, g, np.nan)
        # Diverged runs above the best point teach the model that the region is bad.
        imputed = above
        xs = np.concatenate([x[finite], x[imputed]])
        ys = np.concatenate([warped, np.full(int(imputed.sum()), warped.max())])
        gs = np.concatenate([g, np.full(int(imputed.sum()), np.nan)])
        keep = self._subset(xs, ys, barrier)
        global_model = self._model(
            xs[keep],
            ys[keep],
            gs[keep],
            lo,
            hi,
            x[finite],
            params[0],
            self.trend,
            smooth_if_noisy=True,
        )
        state.models.append(global_model)
        n_finite = int(finite.sum())
        if n_finite > self.local_records:
            # A local model on the records nearest the incumbent: the meta-objective is not
            # stationary (a gentle slope below η*, a wall at the divergence threshold), and
            # one lengthscale for both blurs the optimum.
            observed = x[finite]
            mean_obs, _ = global_model.gp.predict(observed[:, None])
            centre = float(observed[int(np.argmin(mean_obs))])
            near = np.argsort(np.abs(xs - centre), kind="stable")[: self.local_records]
            a, b = float(xs[near].min()), float(xs[near].max())
            margin = 0.1 * (b - a)
            local_lo, local_hi = max(lo, a - margin), min(hi, b + margin)
            if local_hi > local_lo:
                # The local model vouches only for the records it was fitted on: in the
                # margin beyond them it extrapolates (on MNIST TbV seed 6 it put 1.2e-4 at
                # η = 0.26, where every run had given 1e-3, and the search recommended it).
                fitted = observed[np.isin(observed, xs[near])]
                local = self._model(
                    xs[near],
                    ys[near],
                    gs[near],
                    local_lo,
                    local_hi,
                    fitted if fitted.size else observed,
                    params[1],
                )
                state.models.append(local)
        return state

    @staticmethod
    def _model(
        x: FloatArray,
        y: FloatArray,
        g: FloatArray,
        lo: float,
        hi: float,
        observed: FloatArray,
        params: GPHyperparameters | None = None,
        trend: str = "constant",
        *,
        smooth_if_noisy: bool = False,
    ) -> _Model:

        def fit(smooth: bool) -> GaussianProcess:
            # smooth: the noisy-objective prior and slope rule (_NOISY_LENGTHSCALE_PRIOR).
            return fit_gaussian_process(
                x,
                y,
                _smooth_slopes(y, g) if smooth else g,
                lengthscale_prior=_NOISY_LENGTHSCALE_PRIOR if smooth else _LENGTHSCALE_PRIOR,
                max_lengthscale=_NOISY_MAX_LENGTHSCALE if smooth else _MAX_LENGTHSCALE,
                hyperparameters=params,
                trend=trend,
            )

        # Given hyperparameters come from a fit that already made this choice.
        gp = fit(smooth_if_noisy and params is not None and params.value_noise >= _NOISY)
        if smooth_if_noisy and params is None and gp.params.value_noise >= _NOISY:
            gp = fit(True)
        inside = observed[(observed >= lo - 1e-12) & (observed <= hi + 1e-12)]
        if inside.size == 0:
            inside = observed
        mean, _ = gp.predict(inside[:, None])
        return _Model(gp, lo, hi, inside, float(mean.min()), gp.params.value_noise <= _EXACT_NOISE)

    def _proposal_domain(self, barrier: float | None) -> tuple[float, float]:
        """``[lo, hi]`` in ``log η``: the domain, below the divergence barrier."""
        lo, hi = math.log(self.domain[0]), math.log(self.domain[1])
        width = hi - lo
        if barrier is not None:
            hi = min(hi, math.log(barrier) - _MIN_SEPARATION)
            if hi - lo < 0.05 * width:
                # Everything but the bottom of the domain diverged: without user bounds,
                # slide the window down; with them, stay at the lower bound.
                lo = hi - width if self.bounds is None else min(lo, hi)
        return lo, max(hi, lo)

    def _subset(self, x: FloatArray, y: FloatArray, barrier: float | None) -> NDArray[np.intp]:
        """Indices the GP is fitted on: all, or the nearest to the incumbent plus a spread.

        Keeps the fit (``O(n³)`` in records with gradients) bounded: ``3/4`` of
        ``max_fit_records`` nearest the best value in ``log η``, the rest evenly
        spread (by rank in ``x``) over the remaining records, and always the
        imputed point at the divergence barrier.
        """
        n = len(x)
        if n <= self.max_fit_records:
            return np.arange(n)
        best = int(np.argmin(y))
        order = np.argsort(np.abs(x - x[best]), kind="stable")
        near = order[: (3 * self.max_fit_records) // 4]
        rest = np.setdiff1d(np.arange(n), near)
        rest = rest[np.argsort(x[rest], kind="stable")]
        extra = self.max_fit_records - len(near)
        spread = rest[np.unique(np.linspace(0, len(rest) - 1, extra).round().astype(int))]
        chosen = set(near.tolist()) | set(spread.tolist())
        if barrier is not None:
            at_barrier = np.flatnonzero(np.isclose(x, math.log(barrier), rtol=0.0, atol=1e-12))
            chosen |= set(at_barrier[:1].tolist())
        return np.array(sorted(chosen), dtype=int)

    # ------------------------------------------------------------------ design
    def _design(self, index: int, state: _State, avoid: FloatArray) -> float:
        """The ``index``-th initial-design point in ``log η`` that avoids ``avoid``."""
        width = state.hi - state.lo
        for k in range(index, index + 1000):
            if k == 0:
                x = min(max(math.log(self.eta0), state.lo), state.hi)
            else:
                u = (self._offset + k * _GOLDEN) % 1.0
                x = state.lo + u * width
            if not np.any(np.abs(avoid - x) <= _MIN_SEPARATION):
                return x
        return state.lo

    def _in_design(self, state: _State) -> bool:
        if state.gp is None:
            return True
        # The descent design replaces the space-filling one only when it found what it
        # looks for, a bracket; ended by a chaotic gradient, a failure or an edge, the
        # space-filling design resumes (on MNIST the descent from 1/L meets chaos at once,
        # and the good basin lies two decades below, Theorem 3).
        return len(self.history) < self.n_initial and not (
            state.descent_bracketed or state.descent_flattened
        )

    @staticmethod
    def _descent_end(state: _State) -> float | None:
        """The far end of a two-point descent in ``log η``, or ``None``.

        Two finite records at distinct step sizes, no failure, both with a believable
        meta-gradient of one sign, and the far one's value not worse than the near
        one's by more than the near one's slope promised over the step (which
        rejects a step onto the divergence plateau). With three or more records the
        GP decides.
        """
        x, slope, values = state.finite_x, state.descent_slope, state.finite_values
        if x.size != 2 or x[0] == x[1] or state.failed_x.size:
            return None
        far = _descent_far_end(x, slope) if np.all(np.isfinite(slope)) else None
        if far is None:
            return None
        near = 1 - far
        promised = abs(float(slope[near])) * abs(float(x[far] - x[near]))
        if values[far] - values[near] > promised:
            return None
        return float(x[far])

    def _descent(self, state: _State) -> float | None:
        """The next point of the descent design in ``log η``, or ``None`` when it is over.

        While every finite record carries a believable meta-gradient of one sign and
        no run has failed, the optimum lies beyond the told points: step past the
        extreme one by ``ln 3·2^(k−1)`` (``k`` finite records), as a line search
        expands its bracket. A sign change, a failure or the domain's edge ends the
        design, and the GP takes over with a bracket in hand. The values are not
        compared: on a noisy objective the difference of two runs is mostly noise,
        the sign of a hypergradient much less so. A function of the set
        of told records. With gradients this replaces the space-filling design,
        whose far points cost a noisy study most of its early runs.
        """
        x, slope = state.finite_x, state.descent_slope
        if x.size == 0 or state.failed_x.size or not np.all(np.isfinite(slope)):
            return None
        if state.descent_flattened:
            return None
        signs = np.sign(slope)
        if signs[0] == 0.0 or np.any(signs != signs[0]):
            return None
        direction = -float(signs[0])
        if np.unique(x).size != x.size:
            return None
        step = _DESCENT_STEP * 2.0 ** (x.size - 1)
        target = float(np.max(direction * x)) * direction + direction * step
        target = min(max(target, state.lo), state.hi)
        if np.any(np.abs(state.told_x - target) <= _MIN_SEPARATION):
            return None
        return target

    # ------------------------------------------------------------------ acquisition
    @staticmethod
    def _banned(state: _State, extra: FloatArray) -> FloatArray:
        """The sorted points that proposals keep away from (failed/told/pending)."""
        banned = [state.failed_x, extra]
        if state.exact:
            banned.append(state.told_x)
        return np.sort(np.concatenate(banned))

    @staticmethod
    def _excluded(points: FloatArray, banned: FloatArray) -> NDArray[np.bool_]:
        """Mask of points within ``_MIN_SEPARATION`` of a (sorted) banned point.

        The nearest banned point is a neighbour in sorted order: one binary search
        instead of all pairwise distances.
        """
        if banned.size == 0:
            return np.zeros(points.shape, bool)
        index = np.searchsorted(banned, points)
        left = banned[np.maximum(index - 1, 0)]
        right = banned[np.minimum(index, banned.size - 1)]
        distance = np.minimum(np.abs(points - left), np.abs(points - right))
        return distance <= _MIN_SEPARATION

    def _maximise_ei(
        self, model: _Model, state: _State, avoid: FloatArray, gp: GaussianProcess | None = None
    ) -> tuple[float, float]:
        """``(x, log EI)`` of the acquisition maximiser of one model over its interval.

        ``gp`` replaces the model's GP (the fantasy-conditioned one of :meth:`_spread`).
        """
        lo, hi = model.lo, model.hi
        if state.told_x.size:
            lo = max(lo, min(float(state.told_x.min()) - _EXPLORE_MARGIN, hi))
            hi = min(hi, max(float(state.told_x.max()) + _EXPLORE_MARGIN, lo))
        gp = model.gp if gp is None else gp
        banned = self._banned(state, avoid)

        def score(points: FloatArray) -> FloatArray:
            mean, var = gp.predict(points[:, None])
            out = log_expected_improvement(mean, var, model.incumbent)
            return np.where(self._excluded(points, banned), -np.inf, out)

        grid = np.linspace(lo, hi, self.grid_size)
        values = score(grid)
        x, log_ei = _zoom(score, grid, values, lo, hi)
        if not np.isfinite(log_ei):  # no improvement anywhere: the freest grid point
            free = ~self._excluded(grid, banned)
            x = float(grid[np.argmax(free)]) if free.any() else lo
        return x, log_ei

    def _acquire(
        self, state: _State, avoid: FloatArray, gps: list[GaussianProcess] | None = None
    ) -> tuple[float, float]:
        """``(x, EI/scale)``: the best EI maximiser of the global and the local model.

        EIs of both models are in the same (warped) units, so the larger one wins:
        the local model refines the optimum, the global one explores when its
        uncertainty elsewhere promises more.
        """
        best_x, best_log, scale = state.lo, -np.inf, 1.0
        for i, model in enumerate(state.models):
            x, log_ei = self._maximise_ei(model, state, avoid, None if gps is None else gps[i])
            if i == 0 or log_ei > best_log:
                best_x, best_log, scale = x, log_ei, model.gp.scale
        return best_x, (math.exp(best_log) / scale if np.isfinite(best_log) else 0.0)

    def _recommend(self, state: _State) -> float:
        """The minimiser of the posterior mean over the explored domain, in ``log η``.

        After the first step of a descent (two records whose believable
        meta-gradients share a sign, :meth:`_descent_end`), the far one: both slopes
        say the minimum is at or beyond it, whatever two noisy values say, and a GP
        on two points cannot tell noise from signal (measured on digits studies:
        after runs at 0.1, slope −1.6e-3, and 0.3, slope −2e-5, the two values tied
        by chance, the GP called them exact and recommended 0.1, 12 % above the
        optimal expected loss).
        """
        if "recommend" in state.cache:
            return float(state.cache["recommend"])
        far = self._descent_end(state)
        if far is not None:
            state.cache["recommend"] = far
            return far
        # Exact: the local model resolves the kink at η*; noisy: the global one averages
        # more records (the local one chases the noise of its ten).
        model = state.models[-1] if state.exact else state.models[0]
        gp = model.gp
        a = float(model.observed_x.min())
        b = float(max(min(model.observed_x.max(), state.hi), a))
        mean_obs, var_obs = gp.predict(model.observed_x[:, None])
        observed = int(np.argmin(mean_obs))
        x_obs = float(model.observed_x[observed])
        ucb_obs = mean_obs[observed] + _RECOMMEND_BETA * math.sqrt(max(var_obs[observed], 0.0))

        # Noisy: minimise the upper bound μ + σ rather than μ, so that one lucky run where
        # few others are (large step sizes scatter most) does not outbid a well-sampled
        # region with the same mean (measured on a digits study: a run at η = 0.75 pulled
        # the recommendation from 0.25 to 0.73, regret 0.22).
        kappa = 0.0 if state.exact else _RECOMMEND_KAPPA

        def score(points: FloatArray) -> FloatArray:
            mean, var = gp.predict(points[:, None])
            return -(mean + kappa * np.sqrt(np.maximum(var, 0.0)))

        grid = np.linspace(a, b, max(self.grid_size // 2, 16))
        x, _ = _zoom(score, grid, score(grid), a, b)
        mean, var = gp.predict(np.array([[x]]))
        if mean[0] + _RECOMMEND_BETA * math.sqrt(max(var[0], 0.0)) > ucb_obs:
            x = x_obs
        if state.exact:
            # Snap to a told point that is (almost) the recommendation: its value is known.
            distance = np.abs(state.finite_x - x)
            nearest = int(np.argmin(distance))
            if distance[nearest] <= _MIN_SEPARATION:
                x = float(state.finite_x[nearest])
        state.cache["recommend"] = x
        return x

    def _safeguard(self, state: _State) -> float | None:
        """A golden-section point in the wider gap beside the incumbent.

        ``None`` when the gap is too narrow or the incumbent is not bracketed by told
        points on both sides.

        A stationary GP cannot anticipate the kink of the log meta-objective at
        ``η*`` (a gentle slope below, the divergence wall just above, Theorem 3):
        fitted to the smooth side it is confident that the function rises
        smoothly across the gap to the wall, and EI creeps towards ``η*`` in
        steps of about one lengthscale. Every other proposal therefore shrinks
        the gap between the incumbent (the observed point with the lowest
        posterior mean) and its told neighbours, as Brent's method safeguards
        its parabolic steps with golden sections: the bracket around the
        optimum shrinks geometrically whatever the model believes, and the GP,
        given points on both sides, locates the optimum inside it.
        """
        model = state.models[-1]
        mean, _ = model.gp.predict(model.observed_x[:, None])
        centre = float(model.observed_x[int(np.argmin(mean))])
        told = np.unique(state.told_x)
        below = told[told < centre]
        above = told[told > centre]
        if not (below.size and above.size):
            return None  # no bracket to shrink: exploring an open side is EI's job
        left = float(below.max())
        right = float(above.min())
        right = min(right, state.hi)
        left = max(min(left, centre), state.lo)
        gaps = [(right - centre, 1.0), (centre - left, -1.0)]
        width, sign = max(gaps)
        if width <= 4.0 * _MIN_SEPARATION:
            return None
        return centre + sign * 0.3819660112501051 * width

    def _to_eta(self, x: float) -> float:
        """``exp(x)`` clipped to the bounds; exactly ``eta0`` for ``x = log eta0``."""
        return self._clip(self.eta0 if x == math.log(self.eta0) else math.exp(x))

    # ------------------------------------------------------------------ MetaOptimizer API
    def _propose(self) -> float:
        with _single_blas_thread():
            state = self._state()
            if "propose" in state.cache:
                return float(state.cache["propose"])
            return self._propose_from(state)

    def _propose_from(self, state: _State) -> float:
        descent = self._descent(state) if state.descent_seen else None
        safeguard = None
        if (
            descent is None
            and not self._in_design(state)
            and state.exact
            and (len(self.history) - self.n_initial) % 2 == 1
        ):
            # Golden sections need exact values; on noisy ones they would spend every
            # other run walking into unexplored (and, beside the incumbent, usually
            # worse) territory that EI already weighs.
            safeguard = self._safeguard(state)
        if descent is not None:
            x = descent
        elif self._in_design(state):
            x = self._design(len(self.history), state, np.concatenate([state.told_x]))
        elif safeguard is not None:
            x = safeguard
        else:
            x, ei = self._acquire(state, np.zeros(0))
            state.cache["ei"] = ei
            if state.exact and ei < self.tol:
                best = self._recommend(state)
                if not np.any(np.abs(state.told_x - best) <= _MIN_SEPARATION):
                    x = best  # confirm the recommendation before claiming convergence
        eta = self._to_eta(x)
        state.cache["propose"] = eta
        return eta

    def _spread(self, candidate: float, pending: list[float]) -> float:
        """A proposal away from the pending step sizes: kriging believer, then EI.

        In the initial design the next design points are handed out. Afterwards
        every pending step size inside the domain is added to the GP as an exact
        observation at its posterior mean (no refit), which removes the
        expected improvement there, and EI is maximised again, avoiding the
        pending points themselves.
        """
        state = self._state()
        pend = np.log(np.array([p for p in pending if p > 0.0], dtype=np.float64))
        if self._in_design(state):
            avoid = np.concatenate([state.told_x, pend])
            return self._to_eta(self._design(len(self.history), state, avoid))
        gps = []
        for model in state.models:
            gp = model.gp
            inside = pend[(pend >= state.lo - 1.0) & (pend <= state.hi + 1.0)]
            if inside.size:
                gp = gp.condition_on(inside[:, None], gp.predict(inside[:, None])[0])
            gps.append(gp)
        x, _ = self._acquire(state, pend, gps)
        return self._clip(math.exp(x))

    @property
    def converged(self) -> bool:
        """True when more evaluations are very unlikely to help.

        The largest expected improvement is below ``tol`` times the value scale
        and the recommendation is well determined: on an exact objective it is a
        told point with the best finite value (the confirmation step of
        :meth:`_propose` evaluates it first); on a noisy one its posterior
        standard deviation is below ``√tol`` times the value scale.
        """
        state = self._state()
        if self._in_design(state):
            return False
        self._propose()
        if state.cache.get("ei", math.inf) >= self.tol:
            return False
        assert state.gp is not None
        x = self._recommend(state)
        if state.exact:
            matches = np.abs(state.finite_x - x) <= 0.0
            return bool(matches.any()) and bool(
                state.finite_values[matches].min() <= state.finite_values.min()
            )
        gp = state.models[-1].gp
        _, var = gp.predict(np.array([[x]]))
        return math.sqrt(max(var[0], 0.0)) <= math.sqrt(self.tol) * gp.scale

    def estimate(self) -> float:
        """The recommended step size: the minimiser of the posterior mean (see the class).

        Before the model exists: the best finite told step size, else ``eta0``
        (moved below the divergence barrier if needed). Never NaN.
        """
        state = self._state()
        if state.gp is None:
            best = self.best
            if best is not None:
                return best.eta
            if state.barrier is not None and self.eta0 >= state.barrier:
                return self._clip(math.exp(0.5 * (state.lo + state.hi)))
            return self._clip(self.eta0)
        return self._clip(math.exp(self._recommend(state)))
