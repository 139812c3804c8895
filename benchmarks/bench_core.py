"""Core benchmarks of ``l2l-tune``: meta-gradients, least-squares grids, meta-optimizers.

Three measurements, each taken side by side in one run (every ratio printed or
stored is computed from timings of this run, never hard-coded):

1. **Quadratic meta-gradient.** Seconds per call of the stable closed form
   (``Quadratic.meta_gradient``, log objective) against unrolled backprop in
   PyTorch float64 (``method="backprop"``), ``d = 20``, ``t ∈ {80, 1000, 10000}``,
   at ``η = ½·η*(t)``; plus backprop's finiteness and relative error.
2. **Least squares at the paper's size** (``d = 1000``, ``m = 300``, ``σ = 1``,
   ``t = 40``, the 25-point grid ``logspace(-6, 0, 25)``), train-by-train (500
   training samples) and train-by-validation (250 + 250): batch construction
   time, the closed-form grid, and the same grid by unrolling the ``t`` GD steps
   with the forward tangent ``dw/dη`` (the library's one inner recursion,
   ``l2l_tune.hypergrad.hypergradients``, float64). The unrolled run is timed on
   a subset of the tasks and scaled linearly to ``m`` (labelled "extrapolated");
   its values are checked against the closed form where no run is truncated.
3. **Meta-optimizer evaluations** to reach ``|η − η*| ≤ 1e-6·η*`` on the quadratic
   (``t = 80``, log objective): the default ``"bracket"`` against the paper's
   projected meta-GD (``"paper"``, ``μ0 = 0.01``), from ``η0 ∈ {0.1/L, 10/L}``, over
   seeds and both instance variants; plus the paper method's steps to ``1e-3``
   relative from ``η0 = 0.1`` (the paper's Fig 1 setting), the curvature
   ``F''(η*)`` and the step ``k`` after which ``μ_k = 0.01/√k`` can contract.

Usage::

    python benchmarks/bench_core.py                # full run (a few minutes on 2 cores)
    python benchmarks/bench_core.py --quick        # small sizes, seconds
    python benchmarks/bench_core.py --out benchmarks/results/core.json

Results go to the JSON file given by ``--out`` and a markdown summary next to it
(``core.md`` by default, see ``--markdown``).
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from l2l_tune.bench.common import (
    Column,
    command_line,
    evals_within,
    limit_threads,
    machine_info,
    machine_line,
    records_table,
    relative_error,
    write_results,
)
from l2l_tune.meta import NonFiniteMetaGradientWarning, make_meta_optimizer
from l2l_tune.tasks.least_squares import LeastSquares, LeastSquaresBatch
from l2l_tune.tasks.quadratic import Quadratic

FloatArray = NDArray[np.float64]

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "core.json"

#: Relative tolerance on ``η`` for section 3 and the paper's Fig 1 tolerance.
ETA_TOL = 1e-6
FIG1_TOL = 1e-3


# ====================================================================== utilities
@dataclass(frozen=True)
class Timing:
    """Wall time per call, from ``repeat`` rounds of ``number`` calls each.

    Attributes:
        best: Fastest round, seconds per call (timeit's recommended statistic).
        median: Median round, seconds per call.
        number: Calls per round.
        repeat: Rounds.
    """

    best: float
    median: float
    number: int
    repeat: int


def time_call(
    fn: Callable[[], Any], *, repeat: int = 5, target: float = 0.2, max_number: int = 1 << 20
) -> Timing:
    """Time ``fn()`` timeit-style: calibrate the calls per round, then repeat rounds.

    The number of calls per round doubles until one round takes at least
    ``target`` seconds (a single call is enough for slow functions). The garbage
    collector is off while timing, as in :mod:`timeit`.

    Args:
        fn: Zero-argument callable to time.
        repeat: Number of timed rounds.
        target: Minimum seconds per round when calibrating.
        max_number: Upper limit on calls per round.
    """

    def one_round(number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - start

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        number = 1
        elapsed = one_round(number)  # also a warm-up
        while elapsed < target and number < max_number:
            number = min(max_number, number * max(2, int(math.ceil(target / max(elapsed, 1e-9)))))
            elapsed = one_round(number)
        rounds = [one_round(number) / number for _ in range(repeat)]
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(best=min(rounds), median=statistics.median(rounds), number=number, repeat=repeat)


def time_once(fn: Callable[[], Any], repeat: int = 1) -> tuple[Timing, Any]:
    """Time ``repeat`` single calls of a slow ``fn``; return the timing and the last result."""
    rounds = []
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        rounds.append(time.perf_counter() - start)
    return Timing(min(rounds), statistics.median(rounds), 1, repeat), result


def fmt_s(seconds: float) -> str:
    """Seconds with a readable unit."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_count(value: int | None, cap: int | None = None) -> str:
    """An evaluation count, or "not reached (> cap)"."""
    if value is None:
        return "not reached" if cap is None else f"not reached (> {cap})"
    return str(value)


def section_report(*parts: str | tuple[dict[str, Column], list[dict[str, Any]]]) -> tuple[str, str]:
    """A section's console text (its tables) and markdown (its notes and tables, in order).

    Args:
        parts: Notes (strings) and tables (``(columns, records)`` of :func:`records_table`).
    """
    tables = [part for part in parts if not isinstance(part, str)]
    console = "\n\n".join(records_table(*table, style="text") for table in tables)
    md = [part if isinstance(part, str) else records_table(*part) for part in parts]
    return console, "\n\n".join(md)


# ====================================================================== section 1
def bench_meta_gradient(
    ts: Sequence[int],
    *,
    d: int,
    seed: int,
    variant: Literal["paper", "authors"],
    repeat: int,
    progress: bool,
) -> dict[str, Any]:
    """Stable closed-form vs unrolled-backprop meta-gradient on one quadratic.

    Args:
        ts: Horizons ``t`` to time.
        d: Dimension of the quadratic.
        seed: Seed of ``Quadratic.random``.
        variant: ``"authors"`` or ``"paper"``.
        repeat: Timed rounds for the stable method and for backprop at short
            horizons (backprop at ``t ≥ 5000`` runs 2 single calls).
        progress: Show a tqdm bar.
    """
    q = Quadratic.random(d, seed, variant=variant)
    rows = []
    for t in tqdm(ts, desc="meta-gradient", disable=not progress, leave=False):
        eta_star = q.optimal_step_size(t)
        eta = 0.5 * eta_star
        stable_value = q.meta_gradient(eta, t)
        stable = time_call(partial(q.meta_gradient, eta, t), repeat=repeat)
        backprop_call = partial(q.meta_gradient, eta, t, method="backprop", dtype="float64")

        if t >= 5000:
            backprop, backprop_value = time_once(backprop_call, repeat=2)
        else:
            backprop_value = backprop_call()
            backprop = time_call(backprop_call, repeat=repeat, target=0.3)
        rows.append(
            {
                "t": t,
                "eta": eta,
                "eta_star": eta_star,
                "stable_s": stable,
                "backprop_s": backprop,
                "ratio_backprop_over_stable_best": backprop.best / stable.best,
                "ratio_backprop_over_stable_median": backprop.median / stable.median,
                "stable_value": stable_value,
                "backprop_value": backprop_value,
                "backprop_finite": math.isfinite(backprop_value),
                "backprop_rel_err": relative_error(
                    backprop_value, stable_value, nonfinite=math.nan
                ),
            }
        )
    return {
        "setup": {
            "task": f"Quadratic.random({d}, {seed}, variant={variant!r})",
            "L": q.smoothness,
            "log": True,
            "eta": "0.5 * optimal_step_size(t)",
            "backprop_dtype": "float64",
            "timing": "best and median of rounds; stable: "
            f"{repeat} rounds of >= 0.2 s; backprop: {repeat} rounds of >= 0.3 s, "
            "2 single calls for t >= 5000",
        },
        "rows": rows,
    }


def report_meta_gradient(result: dict[str, Any]) -> tuple[str, str]:
    """Console and markdown tables for section 1."""
    columns: dict[str, Column] = {
        "t": "{t}",
        "stable / call": lambda r: fmt_s(r["stable_s"].best),
        "backprop / call": lambda r: fmt_s(r["backprop_s"].best),
        "backprop ÷ stable": "{ratio_backprop_over_stable_best:,.0f}×",
        "backprop finite": lambda r: "yes" if r["backprop_finite"] else "no",
        "backprop rel. err": "{backprop_rel_err:.2g}",
    }
    setup = result["setup"]
    note = (
        f"{setup['task']} (L = {setup['L']:.4g}), log objective, η = ½·η*(t); "
        "best of several rounds (medians in the JSON); backprop in PyTorch float64."
    )
    return section_report(note, (columns, result["rows"]))


# ====================================================================== section 2
def unrolled_grid(
    X: FloatArray,
    y: FloatArray,
    X_eval: FloatArray,
    y_eval: FloatArray,
    etas: FloatArray,
    t: int,
) -> FloatArray:
    """``(loss, d loss/dη)`` on ``(X_eval, y_eval)`` after ``t`` GD steps from 0, each step size.

    The library's one inner recursion and tangent (:func:`l2l_tune.hypergrad.hypergradients`,
    plain SGD on ``(1/2n)‖Xw − y‖²``, full batch, forward mode, float64): what
    differentiating through the training run costs, against the closed form. It has no
    40σ truncation (the closed form's footnote 3): runs that the closed form truncates
    are left out of the agreement check (see :func:`_agreement`).
    """
    import torch

    from l2l_tune.hypergrad import hypergradients

    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    Xe, ye = torch.as_tensor(X_eval), torch.as_tensor(y_eval)

    def loss(w: Any, batch: Any = None) -> Any:
        r = Xt @ w - yt
        return (r @ r) / (2 * len(yt))

    def meta_loss(w: Any) -> Any:
        r = Xe @ w - ye
        return (r @ r) / (2 * len(ye))

    w0 = torch.zeros(X.shape[1], dtype=torch.float64)
    out = np.zeros((len(etas), 2))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "non-finite hypergradient", RuntimeWarning)
        for k, eta in enumerate(etas):
            result = hypergradients(loss, w0, [None] * t, meta_loss, hparams={"lr": float(eta)})
            out[k] = result.value, result.gradients["lr"]
    return out


def _closed_form_grid(batch: LeastSquaresBatch, grid: FloatArray, t: int, split: str) -> FloatArray:
    """``(value, derivative)`` of the batch's meta-loss at every grid point, shape ``(G, 2)``."""
    return np.array([batch.value_and_gradient(float(eta), t, split=split) for eta in grid])


def _agreement(
    loop: FloatArray, closed: FloatArray, truncated: NDArray[np.bool_]
) -> dict[str, float]:
    """Relative agreement of loop and closed-form ``(value, derivative)`` grids, over the
    step sizes where no task's run is truncated (the loop does not truncate)."""
    loop, closed = loop[~truncated], closed[~truncated]
    value_err = max(
        relative_error(float(a), float(b), nonfinite=math.nan)
        for a, b in zip(loop[:, 0], closed[:, 0], strict=True)
    )
    grads = [(float(a), float(b)) for a, b in zip(loop[:, 1], closed[:, 1], strict=True)]
    nonzero = [relative_error(a, b, nonfinite=math.nan) for a, b in grads if b != 0.0]
    scale = max(abs(b) for _, b in grads) or 1.0
    return {
        "value_max_rel_err": value_err,
        "grad_max_rel_err": max(nonzero) if nonzero else 0.0,
        "grad_max_abs_err_over_max_grad": max(abs(a - b) for a, b in grads) / scale,
        "grad_zero_mismatches": sum(1 for a, b in grads if (a == 0.0) != (b == 0.0)),
        "points_compared": len(grads),
    }


def bench_least_squares(
    *,
    d: int,
    m: int,
    n_total: int,
    n_train_tbv: int,
    t: int,
    grid: FloatArray,
    n_loop_tasks: int,
    seed: int,
    repeat: int,
    construction_repeat: int,
    progress: bool,
) -> dict[str, Any]:
    """Closed form vs the unrolled forward-mode run over the 25-point grid, TbT and TbV.

    Args:
        d: Input dimension.
        m: Number of tasks.
        n_total: Samples per task (all training for TbT).
        n_train_tbv: Training samples for TbV (the rest is validation).
        t: GD steps.
        grid: Step sizes.
        n_loop_tasks: Tasks on which the loop is timed (scaled linearly to ``m``).
        seed: Data seed.
        repeat: Timed rounds of the closed-form grid.
        construction_repeat: Timed rounds of batch construction.
        progress: Show tqdm bars.
    """
    sigma = 1.0
    problem = LeastSquares(d, sigma)
    # name -> (n_train, n_valid, split)
    splits: dict[str, tuple[int, int, str]] = {
        "TbT": (n_total, 0, "train"),
        "TbV": (n_train_tbv, n_total - n_train_tbv, "valid"),
    }
    n_loop = min(n_loop_tasks, m)
    scale = m / n_loop

    # Raw-data generation alone (part of every construction below), for the split of costs.
    def generate_all() -> None:
        for _ in problem.draw_tasks(m, n_total, seed):
            pass

    generation, _ = time_once(generate_all, repeat=1)
    subset = list(problem.draw_tasks(n_loop, n_total, seed))

    out: dict[str, Any] = {
        "setup": {
            "d": d,
            "m": m,
            "n_total": n_total,
            "sigma": sigma,
            "t": t,
            "grid": grid,
            "seed": seed,
            "loop_tasks_timed": n_loop,
            "loop_scale_factor": scale,
            "loop_extrapolated": n_loop < m,
            "timing": f"closed-form grid: best/median of {repeat} rounds; construction: "
            f"best/median of {construction_repeat}; loops: one run on {n_loop} tasks",
        },
        "data_generation_s": generation.best,
    }
    for name, (n_train, n_valid, split) in splits.items():
        construct = partial(problem.sample, m, n_train, n_valid, seed=seed)
        construction, batch = time_once(construct, repeat=construction_repeat)
        closed_value = _closed_form_grid(batch, grid, t, split)
        closed = time_call(
            partial(_closed_form_grid, batch, grid, t, split), repeat=repeat, target=0.5
        )

        # The closed form on exactly the loop's tasks, for the agreement check.
        sub_batch = problem.sample(n_loop, n_train, n_valid, seed=seed)
        sub_closed = _closed_form_grid(sub_batch, grid, t, split)

        truncated = np.array([bool(sub_batch.truncated(float(eta), t).any()) for eta in grid])
        per_task = np.zeros((n_loop, len(grid), 2))
        start = time.perf_counter()
        for i, (X, y, _) in enumerate(
            tqdm(subset, desc=f"{name} unrolled", disable=not progress, leave=False)
        ):
            Xtr, ytr = X[:n_train], y[:n_train]
            Xev, yev = (Xtr, ytr) if split == "train" else (X[n_train:], y[n_train:])
            per_task[i] = unrolled_grid(Xtr, ytr, Xev, yev, grid, t)
        loop_subset_s = time.perf_counter() - start
        loop = per_task.mean(axis=0)

        loop_full_s = loop_subset_s * scale
        precompute_s = max(construction.best - generation.best, 0.0)
        out[name] = {
            "n_train": n_train,
            "n_valid": n_valid,
            "split": split,
            "construction_s": construction,
            "construction_minus_generation_s": precompute_s,
            "closed_form_grid_s": closed,
            "loop_subset_s": loop_subset_s,
            "loop_grid_s": loop_full_s,
            "speedup_loop_over_closed": loop_full_s / closed.best,
            "speedup_loop_over_closed_plus_construction": loop_full_s
            / (closed.best + construction.best),
            "speedup_loop_over_closed_plus_precompute": loop_full_s / (closed.best + precompute_s),
            "agreement_loop": _agreement(loop, sub_closed, truncated),
            "truncated_grid_points_loop_tasks": int(truncated.sum()),
            "closed_form_grid_values": closed_value,
            "loop_subset_grid_values": loop,
            "closed_form_subset_grid_values": sub_closed,
            "truncated_grid_points_full_batch": int(np.sum(closed_value[:, 1] == 0.0)),
        }
    return out


def report_least_squares(result: dict[str, Any]) -> tuple[str, str]:
    """Console and markdown tables for section 2."""
    setup = result["setup"]
    ext = " (extrapolated)" if setup["loop_extrapolated"] else ""
    columns: dict[str, Column] = {
        "": "{name}",
        "construction": lambda r: fmt_s(r["construction_s"].best),
        "closed-form grid": lambda r: fmt_s(r["closed_form_grid_s"].best),
        f"unrolled forward mode{ext}": lambda r: fmt_s(r["loop_grid_s"]),
        "unrolled ÷ closed": "{speedup_loop_over_closed:,.0f}×",
        "unrolled ÷ (closed + precompute)": "{speedup_loop_over_closed_plus_precompute:,.1f}×",
    }
    agreement_columns: dict[str, Column] = {
        "": "{name}",
        "value max rel. err": "{value_max_rel_err:.2g}",
        "derivative max rel. err": "{grad_max_rel_err:.2g}",
        "derivative max abs. err / max |F̂'|": "{grad_max_abs_err_over_max_grad:.2g}",
        "step sizes compared (of the grid)": f"{{points_compared}} of {len(setup['grid'])}",
    }
    splits = [{"name": name, **result[name]} for name in ("TbT", "TbV")]
    agreements = [{"name": r["name"], **r["agreement_loop"]} for r in splits]
    note = (
        f"d = {setup['d']}, m = {setup['m']} tasks, {setup['n_total']} samples per task "
        f"(TbT: all training; TbV: {result['TbV']['n_train']} + {result['TbV']['n_valid']}), "
        f"σ = {setup['sigma']:g}, t = {setup['t']}, {len(setup['grid'])}-point grid "
        "logspace(-6, 0, 25), value and derivative at every point. "
        f"Raw data generation alone: {fmt_s(result['data_generation_s'])}, included in "
        '"construction" (precompute = construction − generation). '
    )
    if setup["loop_extrapolated"]:
        note += (
            f"Loops timed on the first {setup['loop_tasks_timed']} tasks and scaled "
            f"×{setup['loop_scale_factor']:g} to {setup['m']} tasks (extrapolated). "
        )
    note += (
        '"Unrolled forward mode": per task and step size, t GD steps carrying the tangent '
        "dw/dη, run by the library's one inner recursion (l2l_tune.hypergrad.hypergradients, "
        "SGD, full batch, float64 on PyTorch). Agreement: its means over the timed tasks vs "
        "the closed form on the same tasks, maximum over the step sizes at which no task is "
        "truncated by the 40σ rule (the unrolled run does not truncate; derivative relative "
        "error over points with a nonzero closed-form derivative)."
    )
    return section_report(note, (columns, splits), (agreement_columns, agreements))


# ====================================================================== section 3
def run_meta_optimizer(
    q: Quadratic,
    name: str,
    eta0: float,
    t: int,
    budget: int,
    *,
    stop_when_converged: bool,
    **options: Any,
) -> tuple[FloatArray, bool, int]:
    """Run an ask/tell loop; return the estimate after each evaluation, ``converged``, evals.

    The estimate is :meth:`MetaOptimizer.estimate` (the paper method's next
    iterate; the bracket's secant root inside the final bracket).
    """
    optimizer = make_meta_optimizer(name, eta0=eta0, **options)
    estimates = np.empty(budget)
    n = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        for n in range(1, budget + 1):
            eta = optimizer.ask()
            value, grad = q.value_and_gradient(eta, t, log=True)
            optimizer.tell(eta, value, grad)
            estimates[n - 1] = optimizer.estimate()
            if stop_when_converged and optimizer.converged:
                break
    return estimates[:n], optimizer.converged, n


def curvature(q: Quadratic, eta_star: float, t: int, rel_h: float = 1e-4) -> float:
    """``F''(η*)`` of the log meta-objective by a central difference of the meta-gradient."""
    h = rel_h * eta_star
    return (q.meta_gradient(eta_star + h, t) - q.meta_gradient(eta_star - h, t)) / (2 * h)


def bench_meta_optimizers(
    *,
    seeds: Sequence[int],
    variants: Sequence[Literal["paper", "authors"]],
    d: int,
    t: int,
    paper_lr: float,
    paper_cap: int,
    bracket_cap: int,
    fig1_eta0: float,
    progress: bool,
) -> dict[str, Any]:
    """Evaluations to reach ``|η − η*| ≤ 1e-6·η*``: ``"bracket"`` vs ``"paper"``.

    Args:
        seeds: Seeds of ``Quadratic.random``.
        variants: Instance variants.
        d: Dimension.
        t: Horizon.
        paper_lr: ``μ0`` of the paper method.
        paper_cap: Evaluation budget of the paper method (always run in full, so
            "stays within tolerance" is checked over the whole budget).
        bracket_cap: Budget of the bracket method (stops when it reports converged).
        fig1_eta0: Absolute starting step size of the Fig 1 runs.
        progress: Show a tqdm bar.
    """
    starts = {"0.1/L": 0.1, "10/L": 10.0}
    runs = []
    fig1 = []
    jobs = [(v, s) for v in variants for s in seeds]
    for variant, seed in tqdm(jobs, desc="meta-optimizers", disable=not progress, leave=False):
        q = Quadratic.random(d, seed, variant=variant)
        L = q.smoothness
        eta_star = q.optimal_step_size(t)
        f2 = curvature(q, eta_star, t)
        # μ_k F'' < 2  ⇔  0.01·F''/(2√k) < 1  ⇔  k > (μ0·F''/2)².
        k_contract = int(math.floor((paper_lr * f2 / 2.0) ** 2)) + 1 if f2 > 0 else None
        instance = {
            "variant": variant,
            "seed": seed,
            "L": L,
            "eta_star": eta_star,
            "F2": f2,
            "k_contract_predicted": k_contract,
        }
        paper_estimates: dict[str, FloatArray] = {}
        for label, factor in starts.items():
            eta0 = factor / L
            for name, budget, stop, options in (
                ("bracket", bracket_cap, True, {}),
                ("paper", paper_cap, False, {"lr": paper_lr}),
            ):
                start = time.perf_counter()
                estimates, converged, n = run_meta_optimizer(
                    q, name, eta0, t, budget, stop_when_converged=stop, **options
                )
                seconds = time.perf_counter() - start
                errors = np.abs(estimates - eta_star) / eta_star
                if name == "paper":
                    paper_estimates[label] = estimates
                runs.append(
                    {
                        **instance,
                        "eta0": label,
                        "eta0_value": eta0,
                        "method": name,
                        "budget": budget,
                        "evals_run": n,
                        "converged_flag": converged,
                        "evals_to_tol": evals_within(errors, ETA_TOL, stay=True),
                        "evals_to_first_tol": evals_within(errors, ETA_TOL),
                        "evals_to_1e-3": evals_within(errors, FIG1_TOL, stay=True),
                        "final_rel_err": float(errors[-1]),
                        "seconds": seconds,
                    }
                )
        # Projection onto η ≥ 0 can synchronise the paper method's runs: once both hit
        # η = 0 at the same k (μ_k depends on k only), they coincide from then on. Count the
        # evaluations after which their estimates stay equal.
        first, second = (paper_estimates[label] for label in starts)
        instance_merge = evals_within(first != second, 0.0, stay=True)
        for run in runs[-2 * len(starts) :]:
            if run["method"] == "paper":
                run["paper_runs_identical_from_eval"] = instance_merge
        estimates, _, n = run_meta_optimizer(
            q, "paper", fig1_eta0, t, paper_cap, stop_when_converged=False, lr=paper_lr
        )
        errors = np.abs(estimates - eta_star) / eta_star
        fig1.append(
            {
                **instance,
                "eta0_value": fig1_eta0,
                "eta0_over_2_over_L": fig1_eta0 / (2.0 / L),
                "budget": paper_cap,
                "steps_to_1e-3_first": evals_within(errors, FIG1_TOL),
                "steps_to_1e-3_stay": evals_within(errors, FIG1_TOL, stay=True),
                "steps_to_1e-6_stay": evals_within(errors, ETA_TOL, stay=True),
                "final_rel_err": float(errors[-1]),
            }
        )
    return {
        "setup": {
            "d": d,
            "t": t,
            "log": True,
            "tolerance": ETA_TOL,
            "eta_star": "Quadratic.optimal_step_size(t) (Brent, ~1e-15 relative)",
            "paper_lr": paper_lr,
            "paper_cap": paper_cap,
            "bracket_cap": bracket_cap,
            "bracket_tol": "library default (1e-10 relative bracket width)",
            "count": "evaluations n after which estimate() stays within tolerance through the "
            "end of the run (paper: the whole budget; bracket: until it reports converged)",
            "curvature": "central difference of the stable meta-gradient, h = 1e-4·η*",
            "k_contract_predicted": "smallest k with μ0·F''/(2√k) < 1",
        },
        "runs": runs,
        "fig1": fig1,
    }


def report_meta_optimizers(result: dict[str, Any]) -> tuple[str, str]:
    """Console and markdown tables for section 3."""
    setup = result["setup"]
    cap = setup["paper_cap"]
    bracket_cap = setup["bracket_cap"]
    # One record per instance: its first run's fields, and each run under "method η0".
    instances: dict[tuple[str, int], dict[str, Any]] = {}
    for run in result["runs"]:
        record = instances.setdefault((run["variant"], run["seed"]), dict(run))
        record[f"{run['method']} {run['eta0']}"] = run
    columns: dict[str, Column] = {
        "variant": "{variant}",
        "seed": "{seed}",
        "L": "{L:.4g}",
        "η*": "{eta_star:.5g}",
        "bracket (η0 = 0.1/L)": lambda r: fmt_count(
            r["bracket 0.1/L"]["evals_to_tol"], bracket_cap
        ),
        "bracket (η0 = 10/L)": lambda r: fmt_count(r["bracket 10/L"]["evals_to_tol"], bracket_cap),
        "paper (η0 = 0.1/L)": lambda r: fmt_count(r["paper 0.1/L"]["evals_to_tol"], cap),
        "paper (η0 = 10/L)": lambda r: fmt_count(r["paper 10/L"]["evals_to_tol"], cap),
        "paper to 1e-3 (0.1/L, 10/L)": lambda r: ", ".join(
            fmt_count(r[f"paper {start}"]["evals_to_1e-3"]) for start in ("0.1/L", "10/L")
        ),
        "paper runs identical from eval": lambda r: fmt_count(
            r["paper 0.1/L"]["paper_runs_identical_from_eval"]
        ),
    }
    fig1_columns: dict[str, Column] = {
        "variant": "{variant}",
        "seed": "{seed}",
        "η0 / (2/L)": "{eta0_over_2_over_L:.3g}",
        "F''(η*)": "{F2:.4g}",
        "predicted k (μ_k F'' < 2)": "{k_contract_predicted}",
        "first within 1e-3": lambda r: fmt_count(r["steps_to_1e-3_first"], cap),
        "stays within 1e-3": lambda r: fmt_count(r["steps_to_1e-3_stay"], cap),
        "stays within 1e-6": lambda r: fmt_count(r["steps_to_1e-6_stay"], cap),
        f"rel. err after {cap}": "{final_rel_err:.2g}",
    }
    fig1 = sorted(result["fig1"], key=lambda r: (r["variant"] != "authors", r["seed"]))
    note = (
        f"Quadratic.random(d = {setup['d']}, seed, variant), t = {setup['t']}, log objective. "
        f"Meta-gradient evaluations until estimate() is within {ETA_TOL:g}·η* and stays there "
        f"(paper: checked over the whole budget of {cap}; bracket: until it reports converged). "
        f'"paper" = projected meta-GD with μ_k = {setup["paper_lr"]:g}/√k. Last column: '
        "evaluations until the paper method stays within 1e-3·η*. The projection onto η ≥ 0 "
        "synchronises the paper method's two runs: both iterates bounce between η = 0 and "
        "divergent step sizes early on, and once both are clipped to 0 at the same k "
        "(μ_k depends only on k) the runs coincide from then on (last column), hence "
        "equal counts from both starts."
    )
    fig1_eta0 = result["fig1"][0]["eta0_value"] if result["fig1"] else math.nan
    note2 = (
        f"Paper method from η0 = {fig1_eta0:g} (absolute, as in the paper's Fig 1), "
        f"t = {setup['t']}, budget {cap}. F''(η*): central difference of the meta-gradient. "
        "The μ_k = μ0/√k iteration can only contract once μ_k·F'' < 2, i.e. "
        "k > (μ0·F''/2)² (\"predicted k\")."
    )
    records = [instances[key] for key in sorted(instances, key=lambda k: (k[0] != "authors", k))]
    return section_report(note, (columns, records), note2, (fig1_columns, fig1))


# ====================================================================== main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (m=20, d=200, 2 seeds)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path (default: benchmarks/results/core.json; "
        "core_quick.json with --quick)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="markdown summary path (default: core.md next to --out, core_quick.md with --quick)",
    )
    parser.add_argument(
        "--loop-tasks",
        type=int,
        default=30,
        help="tasks on which the unrolled runs are timed (scaled linearly to m)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS and torch threads (default 1: multi-threaded OpenBLAS on these small "
        "products was erratic, up to 10x slower, on the 2-core test machine; 0 keeps the "
        "libraries' defaults)",
    )
    parser.add_argument("--no-progress", action="store_true", help="disable tqdm bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run all three sections, print tables, write the JSON and markdown files."""
    args = parse_args(argv)
    progress = not args.no_progress
    quick = args.quick
    stem = "core_quick" if quick else "core"
    out_path: Path = args.out or DEFAULT_OUT.with_name(f"{stem}.json")
    markdown_path: Path = args.markdown or out_path.with_name(f"{stem}.md")
    machine = machine_info()  # before limiting threads: records the libraries' defaults
    thread_limit = limit_threads(args.threads)
    started = time.perf_counter()

    results: dict[str, Any] = {
        "benchmark": "bench_core",
        "mode": "quick" if quick else "full",
        "command": command_line("benchmarks/bench_core.py", argv),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "threads": thread_limit,
    }
    md_parts = [
        "# Core benchmarks (`benchmarks/bench_core.py`)",
        "",
        f"Mode: {results['mode']}. Machine: {machine_line(machine)}; "
        f"{thread_limit['description']}. "
        "Ratios are from timings taken in the same run.",
    ]

    print("== 1. Quadratic meta-gradient: stable closed form vs unrolled backprop ==", flush=True)
    section1 = bench_meta_gradient(
        [80, 1000] if quick else [80, 1000, 10000],
        d=20,
        seed=0,
        variant="authors",
        repeat=3 if quick else 7,
        progress=progress,
    )
    results["meta_gradient"] = section1
    console, md = report_meta_gradient(section1)
    print(console + "\n", flush=True)
    md_parts += ["", "## 1. Time per meta-gradient on the quadratic", "", md]

    print("== 2. Least squares: closed form vs unrolled GD over the 25-point grid ==", flush=True)
    section2 = bench_least_squares(
        d=200 if quick else 1000,
        m=20 if quick else 300,
        n_total=500,
        n_train_tbv=250,
        t=40,
        grid=np.logspace(-6, 0, 25),
        n_loop_tasks=args.loop_tasks,
        seed=0,
        repeat=5,
        construction_repeat=1 if quick else 2,
        progress=progress,
    )
    results["least_squares"] = section2
    console, md = report_least_squares(section2)
    print(console + "\n", flush=True)
    md_parts += ["", "## 2. Least squares: the 25-point grid, closed form vs unrolled GD", "", md]

    print("== 3. Meta-optimizer evaluations to |eta - eta*| <= 1e-6 eta* ==", flush=True)
    section3 = bench_meta_optimizers(
        seeds=[0, 1] if quick else [0, 1, 2, 3, 4],
        variants=["authors", "paper"],
        d=20,
        t=80,
        paper_lr=0.01,
        paper_cap=5000 if quick else 20000,
        bracket_cap=500,
        fig1_eta0=0.1,
        progress=progress,
    )
    results["meta_optimizers"] = section3
    console, md = report_meta_optimizers(section3)
    print(console + "\n", flush=True)
    md_parts += ["", "## 3. Meta-gradient evaluations to reach η*", "", md]

    results["total_seconds"] = time.perf_counter() - started
    md_parts += ["", f"Total benchmark wall time: {results['total_seconds']:.0f} s.", ""]
    write_results(out_path, results, "\n".join(md_parts), markdown_path)
    return results


if __name__ == "__main__":
    main()
