"""Benchmark of the Optuna integration: ``MetaGradientSampler`` against Optuna's samplers.

Two measurements:

1. **Trials to a log-regret threshold.** On two step-size tuning tasks, each run
   through ``optuna.create_study(...).optimize``, every sampler gets the same
   budget of trials (default 60) and the same seed. After each trial the
   *log-regret* ``log(best value so far / f*)`` is recorded; the benchmark
   reports how many trials each sampler needs to bring it below ``1e-4`` and
   below ``1e-2`` (median, min and max over seeds, "not reached" when the budget
   runs out) and the log-regret left at the budget.

   * **quadratic**: ``Quadratic.random(20, seed, variant="authors")``, ``t = 80``;
     the value is the plain last loss ``f(w_80)`` (``log=False``); ``lr`` is
     searched log-uniformly in ``[1e-4, 1]``; ``f*`` is the value at
     ``Quadratic.optimal_step_size(80)``.
   * **least squares (TbV)**: ``LeastSquares(d=200, sigma=1).sample(m=50,
     n_train=50, n_valid=50, seed=seed)``, ``t = 40``, ``split="valid"``; ``lr`` in
     ``[1e-3/L, 10/L]`` (log scale); ``f*`` from a 20000-point log grid refined by
     ``scipy.optimize.minimize_scalar`` (bounded) around the best grid point.

   Samplers: ``MetaGradientSampler`` given the exact meta-gradient (via
   :func:`task_objective`, which calls ``report_meta_gradient``; target
   threshold 1e-4), ``MetaGradientSampler`` on the black-box objective (finite
   differences from paired trials; target 1e-2), and the black-box baselines
   ``RandomSampler``, ``TPESampler``, ``GPSampler`` and ``CmaEsSampler`` (all with
   their default settings and ``seed``), each measured against both thresholds.
   The baselines see the plain value, as the meta-gradient sampler does;
   Random, TPE and CMA-ES depend only on the ranking of the values, but the GP
   does not, so a supplementary row runs ``GPSampler`` on ``log(value)`` (its
   regret is still measured on the plain value).

2. **Sampler overhead per trial.** In an in-memory study that already holds
   1,000 completed trials (added with ``study.add_trials``; for the meta-gradient
   sampler they carry the system attributes it reads: the meta-gradient in
   ``GRADIENT_ATTR``, or the probe/partner roles of finite-difference pairs), the
   time spent in the sampler's methods (``infer_relative_search_space``,
   ``sample_relative``, ``sample_independent``, ``before_trial``,
   ``after_trial``) is measured over 20 further trials of a trivial objective,
   together with the whole trial's wall time.

Usage::

    python benchmarks/bench_optuna.py                 # full run (a few minutes on 2 cores)
    python benchmarks/bench_optuna.py --quick         # 2 seeds, budget 40, coarse grid
    python benchmarks/bench_optuna.py --seeds 5 --budget 60 --gp-budget 40

Results go to ``benchmarks/results/optuna.json`` and ``optuna.md`` (``optuna_quick.*``
with ``--quick``); see ``--out`` and ``--markdown``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from l2l_tune.integrations.optuna import (
    GRADIENT_ATTR,
    MetaGradientSampler,
    report_meta_gradient,
    task_objective,
)
from l2l_tune.integrations.optuna import _sampler as mgs_internals
from optuna.distributions import FloatDistribution
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    RandomSampler,
    TPESampler,
)
from optuna.trial import Trial
from tqdm.auto import tqdm

from l2l_tune.bench.common import (
    dumps_json,
    limit_threads,
    machine_info,
    machine_line,
    markdown_table,
    text_table,
)
from l2l_tune.bench.tasks import find_optimum
from l2l_tune.tasks.least_squares import LeastSquares
from l2l_tune.tasks.quadratic import Quadratic

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "optuna.json"

#: Log-regret thresholds: exact-gradient target and black-box target.
THRESHOLDS: tuple[float, ...] = (1e-4, 1e-2)
PARAM = "lr"
#: The sampler's private bookkeeping of finite-difference pairs, needed only to build a
#: realistic black-box history for the overhead measurement (section 2).
ROLE_ATTR: str = mgs_internals._ROLE_ATTR
PAIR_ATTR: str = mgs_internals._PAIR_ATTR

#: Sampler keys, in table order.
MGS_GRAD = "MetaGradient (exact grad)"
MGS_BB = "MetaGradient (black box)"
RANDOM = "Random"
TPE = "TPE"
GP = "GP"
GP_LOG = "GP on log(value) [suppl.]"
CMA = "CMA-ES"
SAMPLERS: tuple[str, ...] = (MGS_GRAD, MGS_BB, RANDOM, TPE, GP, CMA, GP_LOG)
#: The threshold each sampler is aimed at (None: measured against both, no target).
TARGET: dict[str, float | None] = {MGS_GRAD: 1e-4, MGS_BB: 1e-2}


# ====================================================================== tasks
@dataclass
class TaskInstance:
    """One seed of a benchmark task: its objective, search range and optimum.

    Attributes:
        name: ``"quadratic"`` or ``"least_squares"``.
        seed: Seed of the instance.
        t: Inner GD steps.
        low: Lower bound of ``lr``.
        high: Upper bound of ``lr``.
        f_star: Optimal value of the objective.
        eta_star: Its minimiser.
        value_and_grad: ``lr -> (value, d value / d lr)``, the plain objective.
        info: Extra facts (``L``, how ``f*`` was found, ...).
    """

    name: str
    seed: int
    t: int
    low: float
    high: float
    f_star: float
    eta_star: float
    task: Any = field(repr=False)
    split: str = "train"
    info: dict[str, Any] = field(default_factory=dict)

    def value(self, lr: float) -> float:
        """The plain meta-objective at ``lr``."""
        return float(self.task.meta_objective(lr, self.t, split=self.split, log=False))

    def gradient_objective(self) -> Callable[[Trial], float]:
        """Objective that reports the exact meta-gradient (the library's ``task_objective``)."""
        return task_objective(
            self.task, self.t, split=self.split, param=PARAM, low=self.low, high=self.high
        )

    def blackbox_objective(self, log_value: bool = False) -> Callable[[Trial], float]:
        """Objective returning only the value (or its log, for the supplementary GP row)."""

        def objective(trial: Trial) -> float:
            lr = trial.suggest_float(PARAM, self.low, self.high, log=True)
            value = self.value(lr)
            trial.set_user_attr("value", value)
            return math.log(value) if log_value else value

        return objective


def make_quadratic(seed: int, t: int = 80) -> TaskInstance:
    """``Quadratic.random(20, seed, variant="authors")``; ``f*`` at ``optimal_step_size(t)``."""
    q = Quadratic.random(20, seed, variant="authors")
    eta_star = q.optimal_step_size(t)
    f_star = float(q.meta_objective(eta_star, t, log=False))
    return TaskInstance(
        name="quadratic",
        seed=seed,
        t=t,
        low=1e-4,
        high=1.0,
        f_star=f_star,
        eta_star=eta_star,
        task=q,
        info={
            "L": q.smoothness,
            "eta_star_times_L": eta_star * q.smoothness,
            "f_star_method": "Quadratic.optimal_step_size (Brent on the stable meta-gradient)",
            "value_at_high": float(q.meta_objective(1.0, t, log=False)),
        },
    )


def make_least_squares(seed: int, grid_points: int, t: int = 40) -> TaskInstance:
    """The TbV least-squares batch of the given seed, with ``f*`` from a fine grid."""
    batch = LeastSquares(d=200, sigma=1.0).sample(m=50, n_train=50, n_valid=50, seed=seed)
    scale = batch.step_size_scale()
    low, high = 1e-3 * scale, 10.0 * scale
    # The objective jumps where a task starts being truncated (40σ rule): find_optimum refines
    # only inside the grid cells around the best grid point and keeps the better of the two.
    eta_star, log_objective, info = find_optimum(
        batch, t, "valid", low, high, grid_points=grid_points
    )
    f_star = math.exp(t * log_objective)
    info.update(
        {
            "L": 1.0 / scale,
            "eta_star_times_L": eta_star / scale,
            "f_star_method": info["optimum_method"],
            "truncated_tasks_at_eta_star": int(batch.truncated(eta_star, t).sum()),
            "meta_gradient_at_eta_star": float(batch.meta_gradient(eta_star, t, split="valid")),
        }
    )
    return TaskInstance(
        name="least_squares",
        seed=seed,
        t=t,
        low=low,
        high=high,
        f_star=f_star,
        eta_star=eta_star,
        task=batch,
        split="valid",
        info=info,
    )


# ====================================================================== section 1
def make_sampler(name: str, seed: int) -> BaseSampler:
    """A fresh sampler of the given table name, seeded with ``seed``."""
    if name in (MGS_GRAD, MGS_BB):
        return MetaGradientSampler(param=PARAM, seed=seed)
    if name == RANDOM:
        return RandomSampler(seed=seed)
    if name == TPE:
        return TPESampler(seed=seed)
    if name in (GP, GP_LOG):
        return GPSampler(seed=seed)
    if name == CMA:
        return CmaEsSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


@dataclass
class RunResult:
    """One sampler on one task instance.

    Attributes:
        lrs: Step size of each trial, in order.
        values: Plain objective value of each trial.
        log_regret: ``log(best value so far / f*)`` after each trial.
        trials_to: Trials needed per threshold (``None``: not within the budget).
        final_log_regret: Log-regret after the last trial.
        wall_s: Wall time of ``study.optimize``.
        warnings: Distinct warning messages raised during the run, with counts.
        last_new_lr_trial: 1-based number of the last trial whose step size had not
            been evaluated before (exact equality) in this run.
        converged: For the meta-gradient sampler, the rebuilt meta-optimizer's
            ``converged`` flag at the end; ``None`` otherwise.
        estimate: For the meta-gradient sampler, its final ``η*`` estimate.
    """

    sampler: str
    task: str
    seed: int
    budget: int
    eta_star: float
    lrs: list[float]
    values: list[float]
    log_regret: list[float]
    trials_to: dict[str, int | None]
    final_log_regret: float
    wall_s: float
    warnings: dict[str, int]
    last_new_lr_trial: int
    converged: bool | None = None
    estimate: float | None = None


def threshold_key(threshold: float) -> str:
    """JSON key of a threshold, e.g. ``"1e-04"``."""
    return f"{threshold:.0e}"


def run_sampler(name: str, inst: TaskInstance, budget: int) -> RunResult:
    """Run one study of ``budget`` trials and record the regret trajectory."""
    sampler = make_sampler(name, inst.seed)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    if name == MGS_GRAD:
        objective = inst.gradient_objective()
    else:
        objective = inst.blackbox_objective(log_value=(name == GP_LOG))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        study.optimize(objective, n_trials=budget)
        wall = time.perf_counter() - start
    warn_counts: dict[str, int] = {}
    for w in caught:
        key = f"{w.category.__name__}: {str(w.message)[:160]}"
        warn_counts[key] = warn_counts.get(key, 0) + 1
    trials = study.trials
    lrs = [float(tr.params[PARAM]) for tr in trials]
    # The black-box objectives store the plain value (the GP_LOG one returns its log).
    values = [float(tr.user_attrs.get("value", tr.value)) for tr in trials]  # type: ignore[arg-type]
    best = np.minimum.accumulate(np.asarray(values, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_regret = np.log(best / inst.f_star)
    trials_to: dict[str, int | None] = {}
    for th in THRESHOLDS:
        hit = np.flatnonzero(log_regret <= th)
        trials_to[threshold_key(th)] = int(hit[0]) + 1 if hit.size else None
    seen: set[float] = set()
    last_new = 0
    for i, lr in enumerate(lrs):
        if lr not in seen:
            last_new = i + 1
            seen.add(lr)
    converged = estimate = None
    if isinstance(sampler, MetaGradientSampler):
        optimizer = sampler.meta_optimizer_for(study)
        converged = bool(optimizer.converged)
        estimate = float(optimizer.estimate())
    return RunResult(
        sampler=name,
        task=inst.name,
        seed=inst.seed,
        budget=budget,
        eta_star=inst.eta_star,
        lrs=lrs,
        values=values,
        log_regret=[float(x) for x in log_regret],
        trials_to=trials_to,
        final_log_regret=float(log_regret[-1]),
        wall_s=wall,
        warnings=warn_counts,
        last_new_lr_trial=last_new,
        converged=converged,
        estimate=estimate,
    )


def summarize_runs(runs: list[RunResult]) -> dict[str, Any]:
    """Median/min/max of trials-to-threshold and final log-regret over the seeds of one cell."""
    out: dict[str, Any] = {"seeds": [r.seed for r in runs], "budget": runs[0].budget}
    for th in THRESHOLDS:
        key = threshold_key(th)
        counts = [r.trials_to[key] for r in runs]
        as_float = [math.inf if c is None else float(c) for c in counts]
        med = statistics.median(as_float)
        out[f"trials_to_{key}"] = {
            "per_seed": counts,
            "reached": sum(c is not None for c in counts),
            "median": None if math.isinf(med) else med,
            "min": None if math.isinf(min(as_float)) else min(as_float),
            "max": None if math.isinf(max(as_float)) else max(as_float),
        }
    finals = [r.final_log_regret for r in runs]
    out["final_log_regret"] = {
        "per_seed": finals,
        "median": statistics.median(finals),
        "min": min(finals),
        "max": max(finals),
    }
    out["wall_s_per_run_median"] = statistics.median(r.wall_s for r in runs)
    if runs[0].converged is not None:
        out["converged_at_end"] = [r.converged for r in runs]
        out["last_new_lr_trial"] = [r.last_new_lr_trial for r in runs]
        out["eta_estimate_rel_error"] = [
            None if r.estimate is None else r.estimate / r.eta_star - 1.0 for r in runs
        ]
    return out


def bench_trials_to_regret(
    *,
    seeds: Sequence[int],
    budget: int,
    gp_seeds: Sequence[int],
    gp_budget: int,
    grid_points: int,
    progress: bool,
) -> dict[str, Any]:
    """Section 1: all samplers on both tasks, over the seeds."""
    tasks: dict[str, list[TaskInstance]] = {"quadratic": [], "least_squares": []}
    for seed in tqdm(seeds, desc="task instances (f* grids)", disable=not progress):
        tasks["quadratic"].append(make_quadratic(seed))
        tasks["least_squares"].append(make_least_squares(seed, grid_points))
    jobs: list[tuple[str, TaskInstance, int]] = []
    for task_instances in tasks.values():
        for inst in task_instances:
            for name in SAMPLERS:
                is_gp = name in (GP, GP_LOG)
                if is_gp and inst.seed not in gp_seeds:
                    continue
                jobs.append((name, inst, gp_budget if is_gp else budget))
    runs: list[RunResult] = []
    bar = tqdm(jobs, desc="studies", disable=not progress)
    for name, inst, n_trials in bar:
        bar.set_postfix_str(f"{inst.name} seed {inst.seed} {name}")
        runs.append(run_sampler(name, inst, n_trials))
    summary: dict[str, dict[str, Any]] = {}
    for task_name in tasks:
        summary[task_name] = {}
        for name in SAMPLERS:
            cell = [r for r in runs if r.task == task_name and r.sampler == name]
            if cell:
                summary[task_name][name] = summarize_runs(cell)
                summary[task_name][name]["target_threshold"] = TARGET.get(name)
    # Checks on f*: no sampler should find a value below it (beyond rounding).
    lowest = {
        task_name: min(min(r.log_regret) for r in runs if r.task == task_name)
        for task_name in tasks
    }
    instances = {
        task_name: [
            {
                "seed": i.seed,
                "f_star": i.f_star,
                "eta_star": i.eta_star,
                "low": i.low,
                "high": i.high,
                "t": i.t,
                **i.info,
            }
            for i in insts
        ]
        for task_name, insts in tasks.items()
    }
    return {
        "thresholds": list(THRESHOLDS),
        "seeds": list(seeds),
        "budget": budget,
        "gp_seeds": list(gp_seeds),
        "gp_budget": gp_budget,
        "instances": instances,
        "lowest_log_regret_seen": lowest,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }


# ====================================================================== section 2
class SamplerTimer:
    """Accumulates the wall time spent in a sampler's Optuna-facing methods.

    The methods are wrapped on the instance; nested calls (a sampler's
    ``sample_relative`` calling its own ``sample_independent``) count once.
    """

    METHODS = (
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "before_trial",
        "after_trial",
    )

    def __init__(self, sampler: BaseSampler) -> None:
        self.elapsed = 0.0
        self._depth = 0
        for name in self.METHODS:
            setattr(sampler, name, self._wrap(getattr(sampler, name)))

    def _wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.elapsed += time.perf_counter() - start
                self._depth -= 1

        return timed


def trivial_value_and_grad(lr: float) -> tuple[float, float]:
    """``1 + log(lr/0.01)²`` and its derivative: cheap, positive, minimal at ``lr = 0.01``."""
    z = math.log(lr / 0.01)
    return 1.0 + z * z, 2.0 * z / lr


def history_trials(mode: str, n: int, seed: int, fd_step: float = 0.02) -> list[Any]:
    """``n`` completed frozen trials of the trivial objective, for the overhead study.

    ``mode`` ``"grad"``: each carries its meta-gradient in ``GRADIENT_ATTR``;
    ``"blackbox"``: probe/partner pairs ``(η, η·e^{h})`` with the sampler's role
    attributes (trial numbers ``2k`` and ``2k+1``); ``"plain"``: no attributes.
    """
    dist = FloatDistribution(1e-4, 1.0, log=True)
    rng = np.random.default_rng(seed)
    out = []
    if mode == "blackbox":
        for k in range(n // 2):
            probe = float(math.exp(rng.uniform(math.log(1e-4), math.log(1.0) - fd_step)))
            for role, lr in (("probe", probe), ("partner", probe * math.exp(fd_step))):
                attrs: dict[str, Any] = {ROLE_ATTR: role}
                if role == "partner":
                    attrs[PAIR_ATTR] = 2 * k
                out.append(
                    optuna.trial.create_trial(
                        params={PARAM: lr},
                        distributions={PARAM: dist},
                        value=trivial_value_and_grad(lr)[0],
                        system_attrs=attrs,
                    )
                )
        return out
    for _ in range(n):
        lr = float(math.exp(rng.uniform(math.log(1e-4), 0.0)))
        value, grad = trivial_value_and_grad(lr)
        attrs = {GRADIENT_ATTR: grad} if mode == "grad" else {}
        out.append(
            optuna.trial.create_trial(
                params={PARAM: lr}, distributions={PARAM: dist}, value=value, system_attrs=attrs
            )
        )
    return out


def bench_overhead(history: int, n_trials: int, seed: int, progress: bool) -> dict[str, Any]:
    """Section 2: sampler time per trial on top of ``history`` completed trials."""

    def grad_objective(trial: Trial) -> float:
        lr = trial.suggest_float(PARAM, 1e-4, 1.0, log=True)
        value, grad = trivial_value_and_grad(lr)
        report_meta_gradient(trial, grad)
        return value

    def plain_objective(trial: Trial) -> float:
        return trivial_value_and_grad(trial.suggest_float(PARAM, 1e-4, 1.0, log=True))[0]

    configs: list[tuple[str, str, Callable[[], BaseSampler], Callable[[Trial], float]]] = [
        (MGS_GRAD, "grad", lambda: MetaGradientSampler(param=PARAM, seed=seed), grad_objective),
        (MGS_BB, "blackbox", lambda: MetaGradientSampler(param=PARAM, seed=seed), plain_objective),
        (RANDOM, "plain", lambda: RandomSampler(seed=seed), plain_objective),
        (TPE, "plain", lambda: TPESampler(seed=seed), plain_objective),
    ]
    results: dict[str, Any] = {"history": history, "trials": n_trials, "storage": "in-memory"}
    for name, mode, factory, objective in tqdm(configs, desc="overhead", disable=not progress):
        sampler = factory()
        study = optuna.create_study(sampler=sampler)
        study.add_trials(history_trials(mode, history, seed))
        assert len(study.trials) == history
        if mode == "blackbox":  # the pair attribute must point at the probe's number
            assert study.trials[1].system_attrs[PAIR_ATTR] == study.trials[0].number
        timer = SamplerTimer(sampler)
        study.optimize(objective, n_trials=2)  # warm-up (imports, caches)
        per_trial_sampler: list[float] = []
        per_trial_total: list[float] = []
        for _ in range(n_trials):
            timer.elapsed = 0.0
            start = time.perf_counter()
            study.optimize(objective, n_trials=1)
            per_trial_total.append(time.perf_counter() - start)
            per_trial_sampler.append(timer.elapsed)
        ms = [1e3 * x for x in per_trial_sampler]
        total_ms = [1e3 * x for x in per_trial_total]
        results[name] = {
            "history_mode": mode,
            "sampler_ms_median": statistics.median(ms),
            "sampler_ms_mean": statistics.fmean(ms),
            "sampler_ms_max": max(ms),
            "total_ms_median": statistics.median(total_ms),
            "total_ms_mean": statistics.fmean(total_ms),
            "sampler_ms_per_trial": ms,
        }
    return results


# ====================================================================== reporting
def fmt_count(x: float | None) -> str:
    """A trial count, or "n.r." (not reached within the budget)."""
    if x is None:
        return "n.r."
    return f"{x:g}"


def fmt_trials(cell: dict[str, Any]) -> str:
    """``median [min–max] (k/n)`` of a trials-to-threshold entry."""
    n = len(cell["per_seed"])
    if cell["reached"] == 0:
        return f"not reached (0/{n})"
    head = "not reached" if cell["median"] is None else fmt_count(cell["median"])
    return f"{head} [{fmt_count(cell['min'])}–{fmt_count(cell['max'])}] ({cell['reached']}/{n})"


def fmt_regret(x: float) -> str:
    """A log-regret value, short."""
    if x == 0.0:
        return "0"
    return f"{x:.2e}"


def regret_rows(section: dict[str, Any], task: str) -> tuple[list[str], list[list[str]]]:
    """Rows of the trials-to-threshold table of one task."""
    header = [
        "sampler",
        "gradient",
        "budget",
        "target",
        "trials to ≤1e-4: median [min–max] (reached)",
        "trials to ≤1e-2: median [min–max] (reached)",
        "final log-regret: median [min, max]",
        "s/run",
    ]
    rows = []
    for name, cell in section["summary"][task].items():
        target = cell["target_threshold"]
        cols = []
        for th in THRESHOLDS:
            text = fmt_trials(cell[f"trials_to_{threshold_key(th)}"])
            cols.append(f"**{text}**" if target == th else text)
        final = cell["final_log_regret"]
        rows.append(
            [
                name,
                "exact" if name == MGS_GRAD else "none",
                f"{cell['budget']} × {len(cell['seeds'])} seeds",
                "—" if target is None else f"{target:.0e}",
                *cols,
                f"{fmt_regret(final['median'])} [{fmt_regret(final['min'])}, "
                f"{fmt_regret(final['max'])}]",
                f"{cell['wall_s_per_run_median']:.2f}",
            ]
        )
    return header, rows


def mgs_rows(section: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Diagnostics of the meta-gradient sampler runs (convergence flag, repetition)."""
    header = ["task", "sampler", "seed", "final log-regret", "converged", "last new lr at trial"]
    rows = []
    for run in section["runs"]:
        if run["converged"] is None:
            continue
        rows.append(
            [
                run["task"],
                run["sampler"],
                str(run["seed"]),
                fmt_regret(run["final_log_regret"]),
                str(run["converged"]),
                f"{run['last_new_lr_trial']} / {run['budget']}",
            ]
        )
    return header, rows


def overhead_rows(section: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows of the overhead table."""
    header = [
        "sampler",
        "history attrs",
        "sampler ms/trial (median)",
        "mean",
        "max",
        "whole trial ms (median)",
    ]
    rows = []
    for name in (MGS_GRAD, MGS_BB, RANDOM, TPE):
        r = section[name]
        rows.append(
            [
                name,
                r["history_mode"],
                f"{r['sampler_ms_median']:.2f}",
                f"{r['sampler_ms_mean']:.2f}",
                f"{r['sampler_ms_max']:.2f}",
                f"{r['total_ms_median']:.2f}",
            ]
        )
    return header, rows


def instance_rows(section: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per task instance: L, η*·L and f*."""
    header = ["task", "seed", "L", "η*·L", "f*", "f* from"]
    rows = []
    for task, insts in section["instances"].items():
        for i in insts:
            rows.append(
                [
                    task,
                    str(i["seed"]),
                    f"{i['L']:.4g}",
                    f"{i['eta_star_times_L']:.5g}",
                    f"{i['f_star']:.10g}",
                    i["f_star_method"],
                ]
            )
    return header, rows


def warnings_summary(section: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Warnings per sampler, summed over tasks and seeds."""
    out: dict[str, dict[str, int]] = {}
    for run in section["runs"]:
        for msg, count in run["warnings"].items():
            key = f"{run['task']} / {run['sampler']}"
            out.setdefault(key, {})
            out[key][msg] = out[key].get(msg, 0) + count
    return out


# ====================================================================== machine / main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 seeds, budget 40, 2000-point f* grid, 200-trial history, 10 overhead trials",
    )
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5)")
    parser.add_argument("--budget", type=int, default=None, help="trials per study (default 60)")
    parser.add_argument(
        "--gp-budget", type=int, default=None, help="trials per GPSampler study (default: --budget)"
    )
    parser.add_argument(
        "--gp-seeds", type=int, default=None, help="seeds for GPSampler (default: --seeds)"
    )
    parser.add_argument(
        "--grid-points", type=int, default=None, help="f* grid of least squares (default 20000)"
    )
    parser.add_argument(
        "--history", type=int, default=None, help="completed trials before timing (default 1000)"
    )
    parser.add_argument(
        "--overhead-trials", type=int, default=None, help="timed trials (default 20)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS and torch threads (default 1; 0: defaults)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    parser.add_argument("--markdown", type=Path, default=None, help="markdown output path")
    parser.add_argument("--no-progress", action="store_true", help="disable tqdm bars")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both sections, print tables, write the JSON and markdown files."""
    args = parse_args(argv)
    quick = args.quick
    n_seeds = args.seeds if args.seeds is not None else (2 if quick else 5)
    budget = args.budget if args.budget is not None else (40 if quick else 60)
    gp_budget = args.gp_budget if args.gp_budget is not None else budget
    gp_seeds = args.gp_seeds if args.gp_seeds is not None else n_seeds
    grid_points = args.grid_points or (2000 if quick else 20000)
    history = args.history or (200 if quick else 1000)
    overhead_trials = args.overhead_trials or (10 if quick else 20)
    progress = not args.no_progress
    stem = "optuna_quick" if quick else "optuna"
    out_path: Path = args.out or DEFAULT_OUT.with_name(f"{stem}.json")
    md_path: Path = args.markdown or out_path.with_name(f"{stem}.md")
    command = " ".join(
        ["python benchmarks/bench_optuna.py", *(argv if argv is not None else sys.argv[1:])]
    )

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    machine = machine_info()
    thread_limit = limit_threads(args.threads)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "bench_optuna",
        "mode": "quick" if quick else "full",
        "command": command,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine,
        "threads": thread_limit,
    }
    gp_note = ""
    if gp_budget != budget or gp_seeds != n_seeds:
        gp_note = (
            f" **GPSampler rows use a reduced setting: budget {gp_budget}, "
            f"{min(gp_seeds, n_seeds)} seed(s).**"
        )

    print("== 1. Trials to log-regret thresholds ==", flush=True)
    section1 = bench_trials_to_regret(
        seeds=list(range(n_seeds)),
        budget=budget,
        gp_seeds=list(range(min(gp_seeds, n_seeds))),
        gp_budget=gp_budget,
        grid_points=grid_points,
        progress=progress,
    )
    results["trials_to_regret"] = section1
    md = [
        "# Optuna integration benchmark (`benchmarks/bench_optuna.py`)",
        "",
        f"Mode: {results['mode']}. Command: `{command}`. Machine: {machine_line(machine)}; "
        f"{thread_limit['description']}.",
        "",
        "## 1. Trials to bring log(best value / f*) under a threshold",
        "",
        f"Budget {budget} trials per study, seeds {section1['seeds']}; every sampler gets the "
        f"same seed as the task instance.{gp_note} Cells: median [min–max] over seeds of the "
        "1-based trial at which the best value so far first reaches the threshold, and how "
        'many seeds reached it; "n.r." = not reached within the budget (a median is '
        '"not reached" when half or more of the seeds fail). Bold: the threshold the '
        "sampler is aimed at (1e-4 with exact meta-gradients, 1e-2 for black box). The "
        "baselines are black box and are shown against both thresholds. All samplers minimise "
        "the plain value; Random, TPE and CMA-ES depend only on the ranking of the values, "
        "the GP does not, hence the supplementary GP row on log(value) (regret still on the "
        "plain value).",
    ]
    for task, title in (
        ("quadratic", "Quadratic (d = 20, authors' variant, t = 80, lr ∈ [1e-4, 1])"),
        (
            "least_squares",
            "Least squares TbV (d = 200, m = 50, n = 50 + 50, σ = 1, t = 40, lr ∈ [1e-3/L, 10/L])",
        ),
    ):
        header, rows = regret_rows(section1, task)
        print(f"\n-- {title} --\n" + text_table(header, rows), flush=True)
        md += ["", f"### {title}", "", markdown_table(header, rows)]
    header, rows = mgs_rows(section1)
    print("\n-- MetaGradientSampler diagnostics --\n" + text_table(header, rows), flush=True)
    md += [
        "",
        "### MetaGradientSampler diagnostics per run",
        "",
        "`converged`: the rebuilt meta-optimizer's flag after the last trial "
        "(`sampler.meta_optimizer_for(study).converged`). `last new lr at trial`: the last "
        "trial whose step size had not been evaluated before in the run; after it the sampler "
        "only repeats step sizes.",
        "",
        markdown_table(header, rows),
    ]
    stalled = [
        r
        for r in section1["runs"]
        if r["converged"] is False and r["last_new_lr_trial"] < r["budget"]
    ]
    if stalled:
        md += [
            "",
            f"{len(stalled)} meta-gradient run(s) stopped proposing new step sizes before the "
            "budget while the meta-optimizer reported `converged = False`: "
            + ", ".join(
                f"{r['task']} / {r['sampler']} / seed {r['seed']} (from trial "
                f"{r['last_new_lr_trial'] + 1})"
                for r in stalled
            )
            + ".",
        ]
    header, rows = instance_rows(section1)
    md += ["", "### Task instances", "", markdown_table(header, rows)]
    md += [
        "",
        "Lowest log-regret seen in any run (negative = below f*, by rounding only if tiny): "
        + ", ".join(f"{k}: {v:.2e}" for k, v in section1["lowest_log_regret_seen"].items())
        + ".",
    ]
    warn = warnings_summary(section1)
    results["warnings"] = warn
    if warn:
        md += ["", "Warnings raised during the studies (count over seeds):", ""]
        for key, msgs in warn.items():
            for msg, count in msgs.items():
                md.append(f"* {key}: {count} × `{msg}`")

    print("\n== 2. Sampler overhead per trial ==", flush=True)
    section2 = bench_overhead(history, overhead_trials, seed=0, progress=progress)
    results["overhead"] = section2
    header, rows = overhead_rows(section2)
    print(text_table(header, rows), flush=True)
    md += [
        "",
        f"## 2. Sampler overhead per trial ({history} completed trials in an in-memory study)",
        "",
        f"Time inside the sampler's methods over {overhead_trials} further trials (after 2 "
        "warm-up trials) of the trivial objective `1 + log(lr/0.01)²` (lr ∈ [1e-4, 1], log "
        "scale). History: `grad` = each trial carries `GRADIENT_ATTR`; `blackbox` = "
        f"{history // 2} probe/partner pairs with the sampler's role attributes; `plain` = "
        'no attributes. "whole trial" is the wall time of `study.optimize(n_trials=1)`.',
        "",
        markdown_table(header, rows),
    ]

    results["total_wall_s"] = time.perf_counter() - started
    md += ["", f"Total wall time: {results['total_wall_s']:.0f} s."]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(dumps_json(results) + "\n")
    md_path.write_text("\n".join(md) + "\n")
    print(f"\nTotal {results['total_wall_s']:.0f} s. Wrote {out_path} and {md_path}", flush=True)
    return results


if __name__ == "__main__":
    main()
