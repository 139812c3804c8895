"""``MetaGradientSearch`` driven directly (no Ray cluster): Ray's calls made by hand.

Each test plays Ray's part: ``set_search_properties`` with the Tuner's ``param_space``,
``suggest(trial_id)`` for new trials and ``on_trial_complete(trial_id=..., result=...,
error=...)`` (keywords, as Ray 2.60 calls it) with synthetic results computed from the
library's tasks, exactly what :func:`task_trainable` would report.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _ray_helpers import T, fig1_quadratic, relative_error
from l2l_tune.integrations.ray import MetaGradientSearch, task_trainable
from ray import tune
from ray.tune.utils import flatten_dict

from l2l_tune import LeastSquares, LeastSquaresBatch
from l2l_tune.meta import META_OPTIMIZERS, NonFiniteMetaGradientWarning

Result = dict[str, Any]
ResultFn = Callable[[float], Result]

Q = fig1_quadratic()
ETA_STAR = Q.optimal_step_size(T)
LOW, HIGH = 1e-4, 1.0


def space() -> dict[str, Any]:
    """The Tuner's ``param_space`` of these tests: only the step size."""
    return {"lr": tune.loguniform(LOW, HIGH)}


def extra_space() -> dict[str, Any]:
    """A space with other parameters beside the step size (top level and nested)."""
    return {
        "lr": tune.loguniform(LOW, HIGH),
        "optimizer": tune.choice(["sgd", "adam", "rmsprop"]),
        "batch": tune.randint(1, 100),
        "momentum": tune.uniform(-0.5, 0.5),  # lower < 0: not a step-size domain
        "nested": {"wd": tune.loguniform(1e-6, 1e-2), "fixed": 7},
        "const": "abc",
    }


def make_search(**kwargs: Any) -> MetaGradientSearch:
    """A searcher set up as the Tuner would: metric ``loss``, ``min``, ``eta0 = 0.1``."""
    options: dict[str, Any] = {"metric": "loss", "mode": "min", "eta0": 0.1, **kwargs}
    search = MetaGradientSearch(deterministic=True, **options)
    config = {} if "space" in kwargs else space()
    assert search.set_search_properties(None, None, config)
    return search


def quad_loss(lr: float) -> float:
    """The last loss ``f(w_t)`` of GD on the Fig-1 quadratic."""
    return Q.value_and_gradient(lr, T, log=False)[0]


def quad_result(lr: float) -> Result:
    """What ``task_trainable(Q, 80)`` reports: the last loss and its derivative in ``lr``."""
    value, grad = Q.value_and_gradient(lr, T, log=False)
    return {"loss": value, "loss_grad": grad}


def quad_result_black_box(lr: float) -> Result:
    """A result without a meta-gradient."""
    return {"loss": quad_loss(lr)}


def run_sequential(search: MetaGradientSearch, n: int, result_fn: ResultFn) -> list[float]:
    """``n`` trials one at a time; returns the step sizes handed out."""
    lrs: list[float] = []
    for i in range(n):
        config = search.suggest(f"t{i}")
        assert config is not None
        lrs.append(float(config["lr"]))
        search.on_trial_complete(trial_id=f"t{i}", result=result_fn(config["lr"]), error=False)
    return lrs


def run_concurrent(
    search: MetaGradientSearch,
    n: int,
    result_fn: ResultFn,
    pick: Callable[[int, int], int],
    concurrency: int = 2,
) -> list[float]:
    """``n`` trials with ``concurrency`` always in flight; ``pick(k, in_flight)`` chooses which
    in-flight trial completes at the ``k``-th completion. Returns the step sizes handed out."""
    in_flight: list[tuple[str, float]] = []
    lrs: list[float] = []
    started = completions = 0
    while started < n or in_flight:
        while len(in_flight) < concurrency and started < n:
            config = search.suggest(f"t{started}")
            assert config is not None
            in_flight.append((f"t{started}", float(config["lr"])))
            lrs.append(float(config["lr"]))
            started += 1
        trial_id, lr = in_flight.pop(pick(completions, len(in_flight)))
        completions += 1
        search.on_trial_complete(trial_id=trial_id, result=result_fn(lr))
    return lrs


def best_by_loss(lrs: list[float]) -> float:
    """The handed-out step size with the lowest loss (what ``get_best_result`` picks)."""
    return min(lrs, key=quad_loss)


# ---------------------------------------------------------------------- convergence
def test_gradient_search_converges_within_30_trials() -> None:
    """With meta-gradients, one trial at a time: a step size within 1e-6 (relative) of η* is
    handed out within 30 trials, the best trial is that close, and so is ``estimate()``."""
    search = make_search()
    lrs = run_sequential(search, 30, quad_result)
    hits = [i for i, lr in enumerate(lrs) if relative_error(lr, ETA_STAR) <= 1e-6]
    assert hits, f"closest step size: {min(relative_error(lr, ETA_STAR) for lr in lrs):.2e}"
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 1e-6
    assert relative_error(search.meta_optimizer_state().estimate(), ETA_STAR) <= 1e-6
    assert search.n_meta_steps == 30
    assert len(search.meta_optimizer_state().history) == 30
    assert all(LOW <= lr <= HIGH for lr in lrs)


def test_black_box_search_converges_within_two_percent() -> None:
    """Without a gradient key, finite-difference pairs bring the best trial and ``estimate()``
    within 2 % of η* in at most 60 trials (each record comes from a pair of trials)."""
    search = make_search()
    lrs = run_sequential(search, 60, quad_result_black_box)
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 0.02
    assert relative_error(search.meta_optimizer_state().estimate(), ETA_STAR) <= 0.02
    history = search.meta_optimizer_state().history
    assert 0 < len(history) <= 30
    assert all(r.grad is not None and math.isfinite(r.grad) for r in history)


def test_mode_max_with_negated_values_converges_to_the_same_eta() -> None:
    """``mode="max"`` on ``score = −loss`` (and ``score_grad = −grad``) reaches η* within 1e-6
    in at most 30 trials, as minimising the loss does."""
    search = MetaGradientSearch(deterministic=True, metric="score", mode="max", eta0=0.1)
    assert search.set_search_properties(None, None, space())

    def result(lr: float) -> Result:
        value, grad = Q.value_and_gradient(lr, T, log=False)
        return {"score": -value, "score_grad": -grad}

    lrs = run_sequential(search, 30, result)
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 1e-6
    assert relative_error(search.meta_optimizer_state().estimate(), ETA_STAR) <= 1e-6


def test_metric_and_mode_from_set_search_properties() -> None:
    """Metric and mode left to the Tuner (``set_search_properties``) are taken from there."""
    search = MetaGradientSearch(deterministic=True, eta0=0.1)
    assert search.set_search_properties("loss", "min", space())
    assert (search.metric, search.mode) == ("loss", "min")
    lrs = run_sequential(search, 30, quad_result)
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 1e-6


def test_flattened_nested_gradient_key() -> None:
    """A trainable reporting ``{"grad": {"lr": g}}`` reaches the searcher flattened (Ray's
    ``flatten_dict``) as ``"grad/lr"``: with ``grad_metric="grad/lr"`` the run is the same as
    with the default ``"loss_grad"`` key; without it the key is ignored (black box)."""

    def nested(lr: float) -> Result:
        value, grad = Q.value_and_gradient(lr, T, log=False)
        return flatten_dict({"loss": value, "grad": {"lr": grad}})

    assert set(nested(0.01)) == {"loss", "grad/lr"}
    with_key = run_sequential(make_search(grad_metric="grad/lr"), 25, nested)
    default_key = run_sequential(make_search(), 25, quad_result)
    assert with_key == default_key
    assert relative_error(best_by_loss(with_key), ETA_STAR) <= 1e-6
    ignored = run_sequential(make_search(), 25, nested)
    black_box = run_sequential(make_search(), 25, quad_result_black_box)
    assert ignored == black_box


@pytest.mark.parametrize("name", sorted(META_OPTIMIZERS))
def test_every_meta_optimizer_runs(name: str) -> None:
    """Each registered meta-optimizer drives the searcher: 15 trials, all step sizes finite,
    within the domain's bounds, and the told history grows by one record per trial."""
    search = make_search(meta_optimizer=name)
    lrs = run_sequential(search, 15, quad_result)
    assert all(math.isfinite(lr) and LOW <= lr <= HIGH for lr in lrs)
    assert len(search.meta_optimizer_state().history) == 15


# ---------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("result_fn", [quad_result, quad_result_black_box], ids=["grad", "bbox"])
def test_concurrent_suggestions_get_distinct_step_sizes(result_fn: ResultFn) -> None:
    """Two suggestions before any completion get distinct step sizes (both task seed 0); after
    one completes, the next suggestion avoids the step size still running."""
    search = make_search()
    a, b = search.suggest("a"), search.suggest("b")
    assert a is not None and b is not None
    assert a["lr"] != b["lr"]
    assert a["task_seed"] == b["task_seed"] == 0
    search.on_trial_complete(trial_id="a", result=result_fn(a["lr"]))
    c = search.suggest("c")
    assert c is not None and c["lr"] != b["lr"]
    assert search.n_meta_steps == 1


def test_four_concurrent_suggestions_are_distinct() -> None:
    """Four trials in flight at once (a parallel line search) all get different step sizes,
    also once gradients are known."""
    search = make_search()
    run_sequential(search, 3, quad_result)
    lrs = [search.suggest(f"c{i}")["lr"] for i in range(4)]
    assert len(set(lrs)) == 4


_ORDERS: dict[str, Callable[[int, int], int]] = {
    "fifo": lambda k, n: 0,
    "lifo": lambda k, n: n - 1,
    # The first two trials (started together) finish in swapped order, then FIFO; seen in
    # real Tuner runs on two CPUs in about one run out of four.
    "first_pair_swapped": lambda k, n: 1 if k == 0 else 0,
    "alternating": lambda k, n: k % n,
}


@pytest.mark.parametrize(
    "order",
    [
        "fifo",
        "lifo",
        "first_pair_swapped",
        "alternating",
    ],
)
def test_concurrent_convergence_whatever_the_completion_order(order: str) -> None:
    """With two trials always in flight and meta-gradients reported, the best of 30 trials is
    within 1e-6 (relative) of η*, whichever in-flight trial completes first: the bracketing
    meta-optimizer's safeguards depend on the set of told records, not on their order
    (measured: 3.5e-9 fifo, 1.2e-10 lifo, 6.9e-8 first pair swapped, 1.4e-11 alternating)."""
    lrs = run_concurrent(make_search(), 30, quad_result, _ORDERS[order])
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 1e-6


# ---------------------------------------------------------------------- tasks per step
@functools.cache
def ls_task(task_seed: int) -> LeastSquaresBatch:
    """One least-squares task per seed, with a validation set (TbV)."""
    return LeastSquares(30, 1.0).sample(1, 20, 20, seed=task_seed)


LS_T = 40


def ls_value_and_gradient(lr: float, task_seed: int) -> tuple[float, float]:
    """What ``task_trainable(ls_task, 40, split="valid")`` reports for one task."""
    return ls_task(task_seed).value_and_gradient(lr, LS_T, split="valid", log=False)


def ls_result(config: dict[str, Any]) -> Result:
    value, grad = ls_value_and_gradient(config["lr"], config["task_seed"])
    return {"loss": value, "loss_grad": grad}


@pytest.mark.parametrize("log_objective", [False, True])
def test_tasks_per_step_share_one_step_size_and_tell_the_mean(log_objective: bool) -> None:
    """``tasks_per_step=3``: three trials get the same step size with task seeds 0, 1, 2; nothing
    is told until all three complete (in any order); then one record holds the mean loss (its
    log with ``log_objective``) and the mean gradient (chain rule applied), and the next trial
    starts a new meta-step at another step size with seed 0."""
    search = make_search(tasks_per_step=3, log_objective=log_objective, eta0=0.01)
    configs = [search.suggest(f"t{i}") for i in range(3)]
    assert all(c is not None for c in configs)
    assert len({c["lr"] for c in configs}) == 1
    assert [c["task_seed"] for c in configs] == [0, 1, 2]
    results = [ls_result(c) for c in configs]
    for i in (2, 0):
        search.on_trial_complete(trial_id=f"t{i}", result=results[i])
        assert search.n_meta_steps == 0
        assert search.meta_optimizer_state().history == []
    search.on_trial_complete(trial_id="t1", result=results[1])
    assert search.n_meta_steps == 1
    (record,) = search.meta_optimizer_state().history
    mean_value = float(np.mean([r["loss"] for r in results]))
    mean_grad = float(np.mean([r["loss_grad"] for r in results]))
    assert record.eta == configs[0]["lr"]
    if log_objective:
        assert record.value == pytest.approx(math.log(mean_value), rel=1e-12)
        assert record.grad == pytest.approx(mean_grad / mean_value, rel=1e-12)
    else:
        assert record.value == pytest.approx(mean_value, rel=1e-14)
        assert record.grad == pytest.approx(mean_grad, rel=1e-14)
    following = search.suggest("t3")
    assert following is not None
    assert following["task_seed"] == 0 and following["lr"] != configs[0]["lr"]


def test_tasks_per_step_with_more_trials_in_flight() -> None:
    """With a meta-step's three seeds all handed out, a fourth concurrent trial starts a new
    meta-step (seed 0, another step size); its seeds 1 and 2 go to the next two trials."""
    search = make_search(tasks_per_step=3, eta0=0.01)
    configs = [search.suggest(f"t{i}") for i in range(6)]
    lrs = [c["lr"] for c in configs]
    seeds = [c["task_seed"] for c in configs]
    assert seeds == [0, 1, 2, 0, 1, 2]
    assert lrs[0] == lrs[1] == lrs[2] != lrs[3] == lrs[4] == lrs[5]


def test_tasks_per_step_reaches_the_grid_optimum_of_the_mean() -> None:
    """Thirty meta-steps of three tasks each (TbV least squares, meta-gradients) find a step
    size whose three-task mean validation loss is at most the minimum over a 2001-point
    log grid of the domain."""
    search = make_search(tasks_per_step=3, eta0=0.01)
    means: list[float] = []
    for step in range(30):
        configs = [search.suggest(f"s{step}_{i}") for i in range(3)]
        results = [ls_result(c) for c in configs]
        for i, result in enumerate(results):
            search.on_trial_complete(trial_id=f"s{step}_{i}", result=result)
        means.append(float(np.mean([r["loss"] for r in results])))
    grid = np.geomspace(LOW, HIGH, 2001)
    grid_min = min(np.mean([ls_value_and_gradient(e, s)[0] for s in range(3)]) for e in grid)
    assert min(means) <= grid_min * (1 + 1e-12)
    assert search.n_meta_steps == 30


# ---------------------------------------------------------------------- failures
_FAULTS = {0: "error", 3: "missing", 5: "nan_grad", 8: "nan_value", 9: "error", 14: "nan_grad"}


def _complete_with_fault(
    search: MetaGradientSearch, trial_id: str, lr: float, fault: str, result_fn: ResultFn
) -> None:
    if fault == "error":
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            search.on_trial_complete(trial_id=trial_id, result=None, error=True)
    elif fault == "missing":
        with pytest.warns(UserWarning, match="no numeric 'loss'"):
            search.on_trial_complete(trial_id=trial_id, result={"other": 1.0})
    elif fault == "nan_grad":
        result = dict(result_fn(lr), loss_grad=float("nan"))
        with pytest.warns(NonFiniteMetaGradientWarning):
            search.on_trial_complete(trial_id=trial_id, result=result)
    else:
        with pytest.warns(NonFiniteMetaGradientWarning):
            search.on_trial_complete(trial_id=trial_id, result={"loss": float("nan")})


@pytest.mark.parametrize(
    ("result_fn", "n_good", "tol"),
    [(quad_result, 30, 1e-6), (quad_result_black_box, 60, 0.02)],
    ids=["grad", "bbox"],
)
def test_failed_trials_do_not_corrupt_the_state(
    result_fn: ResultFn, n_good: int, tol: float
) -> None:
    """The policy of ``docs/trial_outcomes.md``: errored trials (``error=True``, silently),
    results without the metric (UserWarning) and NaN values (NonFiniteMetaGradientWarning)
    are failed runs, told as ``(η, inf, None)``; a NaN gradient
    (NonFiniteMetaGradientWarning) is dropped and the value told alone. Every faulty trial
    adds exactly one record, no meta-step stays running, no step size of a faulty trial is
    handed out again, and with ``n_good`` successful trials the search still gets as close
    to η* as without faults (1e-6 with gradients, 2 % black box)."""
    search = make_search()
    lrs: list[float] = []
    faulty: list[float] = []
    handed_out: list[float] = []
    k = 0
    while len(lrs) < n_good:
        trial_id = f"t{k}"
        config = search.suggest(trial_id)
        assert config is not None
        assert config["lr"] not in faulty
        handed_out.append(config["lr"])
        told_before = len(search.meta_optimizer_state().history)
        if k in _FAULTS:
            _complete_with_fault(search, trial_id, config["lr"], _FAULTS[k], result_fn)
            faulty.append(config["lr"])
            fault = _FAULTS[k]
            if result_fn is quad_result:  # (black box: a pair's record waits for its partner)
                history = search.meta_optimizer_state().history
                assert len(history) == told_before + 1
                last = history[-1]
                if fault == "nan_grad":
                    assert math.isfinite(last.value) and last.grad is None
                else:
                    assert last == type(last)(config["lr"], math.inf, None)
        else:
            search.on_trial_complete(trial_id=trial_id, result=result_fn(config["lr"]))
            lrs.append(config["lr"])
        k += 1
        assert search.n_meta_steps == k  # failed meta-steps are finished, not running
    history = search.meta_optimizer_state().history
    assert all(
        (math.isfinite(r.value) and (r.grad is None or math.isfinite(r.grad)))
        or (r.value == math.inf and r.grad is None)
        for r in history
    )
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= tol


def test_errors_above_a_threshold_do_not_freeze_the_search() -> None:
    """Trials that error above a step size (a run that diverges and raises), started above
    it, over several thresholds: the search moves below, never hands out a step size twice
    before it has converged, and the best of 30 trials is within 1e-6 of η* (the optimum
    lies below every threshold)."""
    for factor in (1.02, 1.1, 1.5, 3.0, 10.0):
        threshold = factor * ETA_STAR
        search = make_search(eta0=min(30.0 * threshold, 0.9))
        lrs: list[float] = []
        good: list[float] = []
        for i in range(30):
            config = search.suggest(f"t{i}")
            assert config is not None
            lr = float(config["lr"])
            lrs.append(lr)
            if lr > threshold:
                search.on_trial_complete(trial_id=f"t{i}", result=None, error=True)
            else:
                search.on_trial_complete(trial_id=f"t{i}", result=quad_result(lr))
                good.append(lr)
        final = search.meta_optimizer_state().estimate()
        cut = next((i for i, lr in enumerate(lrs) if abs(lr - final) <= 1e-9 * final), len(lrs))
        assert len(set(lrs[: cut + 1])) == len(lrs[: cut + 1]), (factor, lrs)
        assert relative_error(best_by_loss(good), ETA_STAR) <= 1e-6, (factor, lrs)


def test_repeated_and_unknown_completions_are_ignored() -> None:
    """A second ``on_trial_complete`` for the same trial and one for an unknown trial id change
    nothing (no double counting)."""
    search = make_search()
    config = search.suggest("a")
    assert config is not None
    result = quad_result(config["lr"])
    search.on_trial_complete(trial_id="a", result=result)
    before = list(search.meta_optimizer_state().history)
    search.on_trial_complete(trial_id="a", result={"loss": 123.0, "loss_grad": 1.0})
    search.on_trial_complete(trial_id="a", result=None, error=True)
    search.on_trial_complete(trial_id="never-suggested", result=result)
    assert search.meta_optimizer_state().history == before
    assert search.n_meta_steps == 1


def test_numpy_float32_metrics_are_told() -> None:
    """A result whose metric and gradient are NumPy ``float32`` scalars is told like a float."""
    search = make_search()
    config = search.suggest("a")
    assert config is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        search.on_trial_complete(
            trial_id="a", result={"loss": np.float32(0.5), "loss_grad": np.float32(-1.0)}
        )
    assert len(search.meta_optimizer_state().history) == 1


def test_search_leaves_a_diverging_first_step_size() -> None:
    """Starting at ``eta0 = 5`` (GD diverges; loss and gradient overflow to inf, as
    ``task_trainable`` reports them), the search moves to smaller step sizes: some of the
    first 20 trials has a finite loss, and the best of 40 is within 1e-6 of η*."""
    search = MetaGradientSearch(deterministic=True, metric="loss", mode="min", eta0=5.0)
    assert search.set_search_properties(None, None, {"lr": tune.loguniform(LOW, 10.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        lrs = run_sequential(search, 40, quad_result)
    assert any(math.isfinite(quad_loss(lr)) for lr in lrs[:20]), f"first lrs: {lrs[:5]}"
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 1e-6


# ---------------------------------------------------------------------- save / restore
def _fresh() -> MetaGradientSearch:
    """A new searcher with the same options but no metric, mode, space or seed: all of those
    must come from the restored state."""
    return MetaGradientSearch(deterministic=True, eta0=0.1, seed=12345)


@pytest.mark.parametrize("via", ["state", "file"])
def test_restore_continues_identically_with_a_trial_in_flight(via: str, tmp_path: Path) -> None:
    """A searcher restored (``get_state``/``set_state`` or ``save``/``restore`` to a file) into a
    fresh one, with one trial still in flight, behaves exactly like the original: the in-flight
    trial completes on both, and the next ten configs (step size, task seed and the other
    parameters drawn from the restored RNG) are identical."""
    original = MetaGradientSearch(deterministic=True, metric="loss", mode="min", eta0=0.1, seed=3)
    assert original.set_search_properties(None, None, extra_space())
    run_sequential(original, 7, quad_result)
    in_flight = original.suggest("flying")
    assert in_flight is not None
    restored = _fresh()
    if via == "state":
        restored.set_state(copy.deepcopy(original.get_state()))
    else:
        path = tmp_path / "searcher.pkl"
        original.save(str(path))
        restored.restore(str(path))
    assert (restored.metric, restored.mode) == ("loss", "min")
    for search in (original, restored):
        search.on_trial_complete(trial_id="flying", result=quad_result(in_flight["lr"]))
        assert search.n_meta_steps == 8
    for i in range(10):
        a, b = original.suggest(f"n{i}"), restored.suggest(f"n{i}")
        assert a == b
        for search in (original, restored):
            search.on_trial_complete(trial_id=f"n{i}", result=quad_result(a["lr"]))
    assert original.meta_optimizer_state().history == restored.meta_optimizer_state().history


def test_get_state_is_a_snapshot() -> None:
    """A state taken with ``get_state`` and loaded into a fresh searcher is independent of the
    original: after the original hands out its next trial, the restored searcher proposes the
    same config for the same trial (not one that avoids the original's new trial)."""
    original = make_search()
    run_sequential(original, 5, quad_result)
    restored = _fresh()
    restored.set_state(original.get_state())
    assert original.suggest("next") == restored.suggest("next")


# ---------------------------------------------------------------------- other parameters
def test_other_parameters_are_sampled_and_seeded() -> None:
    """Other domains (``choice``, ``randint``, a negative-range ``uniform``, nested dicts) are
    drawn from their distributions, constants pass through; the same ``seed`` gives identical
    configs, another seed other draws but the same step sizes."""

    def configs(seed: int) -> list[dict[str, Any]]:
        search = make_search(space=extra_space(), seed=seed)
        out = []
        for i in range(12):
            config = search.suggest(f"t{i}")
            assert config is not None
            out.append(config)
            search.on_trial_complete(trial_id=f"t{i}", result=quad_result(config["lr"]))
        return out

    first, again, other = configs(0), configs(0), configs(1)
    assert first == again
    assert [c["lr"] for c in first] == [c["lr"] for c in other]
    assert [c["optimizer"] for c in first] + [c["batch"] for c in first] != [
        c["optimizer"] for c in other
    ] + [c["batch"] for c in other]
    for config in first:
        assert set(config) == {
            "lr",
            "optimizer",
            "batch",
            "momentum",
            "nested",
            "const",
            "task_seed",
        }
        assert config["optimizer"] in {"sgd", "adam", "rmsprop"}
        assert isinstance(config["batch"], (int, np.integer)) and 1 <= config["batch"] < 100
        assert -0.5 <= config["momentum"] <= 0.5
        assert 1e-6 <= config["nested"]["wd"] <= 1e-2 and config["nested"]["fixed"] == 7
        assert config["const"] == "abc"
    assert len({c["optimizer"] for c in first}) > 1
    assert len({c["batch"] for c in first}) > 1


def test_param_names_the_step_size_among_several_floats() -> None:
    """With two step-size-like domains, ``param="lr"`` picks the step size; the other float
    domain is sampled."""
    search = make_search(
        param="lr", space={"lr": tune.loguniform(LOW, HIGH), "wd": tune.uniform(0.0, 1.0)}, seed=0
    )
    lrs = []
    for i in range(30):
        config = search.suggest(f"t{i}")
        assert config is not None and 0.0 <= config["wd"] <= 1.0
        lrs.append(config["lr"])
        search.on_trial_complete(trial_id=f"t{i}", result=quad_result(config["lr"]))
    assert relative_error(best_by_loss(lrs), ETA_STAR) <= 1e-6


def test_space_given_twice_is_refused() -> None:
    """A searcher built with ``space=`` refuses a Tuner ``param_space`` (returns False, Ray's
    contract) but accepts metric and mode with an empty one."""
    search = MetaGradientSearch(deterministic=True, space=space(), eta0=0.1)
    assert search.set_search_properties("loss", "min", space()) is False
    assert search.set_search_properties("loss", "min", {}) is True
    assert (search.metric, search.mode) == ("loss", "min")


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "minimize"}, "mode"),
        ({"meta_optimizer": "sgd"}, "meta_optimizer"),
        ({"tasks_per_step": 0}, "tasks_per_step"),
        ({"fd_step": 0.0}, "fd_step"),
        ({"fd_step": -0.01}, "fd_step"),
        ({"eta0": 0.0}, "eta0"),
    ],
)
def test_constructor_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    """Unknown mode or meta-optimizer, ``tasks_per_step < 1``, ``fd_step ≤ 0`` and ``eta0 ≤ 0``
    raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        MetaGradientSearch(deterministic=True, metric="loss", **kwargs)


def test_set_search_properties_rejects_an_unknown_mode() -> None:
    """A mode passed by the Tuner is checked too."""
    search = MetaGradientSearch(deterministic=True, eta0=0.1)
    with pytest.raises(ValueError, match="mode"):
        search.set_search_properties("loss", "sideways", space())


@pytest.mark.parametrize(
    ("the_space", "param", "match"),
    [
        ({"batch": tune.randint(1, 10), "opt": tune.choice(["a", "b"])}, None, "exactly one"),
        ({"lr": tune.uniform(-1.0, 1.0)}, None, "exactly one"),
        ({"lr": tune.choice([0.1, 0.01]), "x": tune.loguniform(1e-3, 1.0)}, "lr", "'lr'"),
        ({"lr": tune.randint(1, 10)}, "lr", "'lr'"),
        ({"x": tune.loguniform(1e-3, 1.0)}, "lr", "'lr'"),
        ({"lr": tune.loguniform(1e-4, 1.0), "wd": tune.uniform(0.0, 1.0)}, None, "param"),
    ],
    ids=[
        "no-float",
        "negative-float",
        "param-choice",
        "param-randint",
        "param-missing",
        "two-floats",
    ],
)
def test_unusable_space_raises_at_the_first_suggest(
    the_space: dict[str, Any], param: str | None, match: str
) -> None:
    """A space without a float domain (``lower ≥ 0``), a ``param`` naming a non-float or
    missing domain, and two float domains with ``param=None`` raise ValueError at ``suggest``."""
    search = MetaGradientSearch(deterministic=True, param=param, metric="loss", mode="min")
    assert search.set_search_properties(None, None, the_space)
    with pytest.raises(ValueError, match=match):
        search.suggest("t0")


def test_suggest_without_a_space_raises() -> None:
    """Without ``space=`` or a Tuner ``param_space``, ``suggest`` raises ValueError."""
    with pytest.raises(ValueError, match="search space"):
        MetaGradientSearch(deterministic=True, metric="loss", mode="min").suggest("t0")


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"t": 0}, "t"), ({"t": 80, "split": "test"}, "split")]
)
def test_task_trainable_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    """``task_trainable`` checks ``t ≥ 1`` and the split when it is built."""
    with pytest.raises(ValueError, match=match):
        task_trainable(Q, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"deterministic": 1}, "deterministic"), ({"meta_optimizer": "gp"}, "meta_optimizer")],
)
def test_auto_arguments_are_checked(kwargs: dict[str, Any], match: str) -> None:
    """``deterministic`` takes None/True/False; ``meta_optimizer`` names ``auto`` or a key."""
    with pytest.raises(ValueError, match=match):
        MetaGradientSearch(metric="loss", mode="min", **kwargs)


def test_gradient_mapping_by_parameter_name() -> None:
    """A trainable reporting the drop-in optimizers' mapping ``{"loss_grad": {"lr": g,
    "weight_decay": g2}}`` (flattened by Ray to ``"loss_grad/lr"``, …) runs exactly as one
    reporting ``"loss_grad": g``; with a per-group list for the step size it runs as on a
    black box."""

    def mapping(lr: float) -> Result:
        value, grad = Q.value_and_gradient(lr, T, log=False)
        return flatten_dict({"loss": value, "loss_grad": {"lr": grad, "weight_decay": 7.0}})

    assert set(mapping(0.01)) == {"loss", "loss_grad/lr", "loss_grad/weight_decay"}
    assert run_sequential(make_search(), 25, mapping) == run_sequential(
        make_search(), 25, quad_result
    )

    def per_group(lr: float) -> Result:
        value, grad = Q.value_and_gradient(lr, T, log=False)
        return {"loss": value, "loss_grad": {"lr": [grad, grad]}}

    assert run_sequential(make_search(), 8, per_group) == run_sequential(
        make_search(), 8, quad_result_black_box
    )
