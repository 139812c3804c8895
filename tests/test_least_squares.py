"""Least-squares tasks (paper, Section 4): closed forms against a plain GD loop."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from _helpers import TaskData, draw_tasks, gd_with_tangent, loss_and_tangent

from l2l_tune import GridSearch, LeastSquares, LeastSquaresBatch, StepSizeTuner
from l2l_tune.tasks import TRUNCATION_RADIUS

D, M, SEED = 30, 4, 7
SIZES = [(10, 5), (20, 30), (50, 10), (60, 40)]  # n < d and n > d, n_valid < and > d
STEP_MULTIPLES = [0.01, 0.1, 0.5, 1.0, 1.5, 1.9, 2.0, 2.1, 2.2, 2.5, 3.0, 5.0]


def reference_meta(
    tasks: list[TaskData], eta: float, t: int, sigma: float, split: str
) -> tuple[float, float, float, np.ndarray]:
    """F̂, F̂', a cancellation-free gradient scale and the truncation flags, from the GD loop."""
    values, grads, flags = [], [], []
    for task in tasks:
        run = gd_with_tangent(task.X, task.y, eta, t, sigma)
        assert run.margin > 1e-6, "the 40σ test is too close to call for this seed"
        X, y = (task.X, task.y) if split == "train" else (task.X_valid, task.y_valid)
        value, grad = loss_and_tangent(X, y, run)
        values.append(value)
        grads.append(grad)
        flags.append(run.truncated)
    return (
        float(np.mean(values)),
        float(np.mean(grads)),
        float(np.mean(np.abs(grads))),
        np.array(flags),
    )


@pytest.mark.parametrize("sigma", [1.0, 0.05])
@pytest.mark.parametrize(("n_train", "n_valid"), SIZES)
def test_closed_form_matches_gd_loop(n_train: int, n_valid: int, sigma: float) -> None:
    """F̂ (TbT, TbV) to 1e-9, F̂' to 1e-7 and truncated() agree with explicit GD with the 40σ rule."""
    batch = LeastSquares(D, sigma).sample(M, n_train, n_valid, seed=SEED)
    tasks = draw_tasks(D, sigma, M, n_train, n_valid, SEED)
    L = 1 / batch.step_size_scale()
    truncation_counts = set()
    for t in (1, 5, 40):
        for k in STEP_MULTIPLES:
            eta = k / L
            flags = None
            for split in ("train", "valid"):
                value_ref, grad_ref, grad_scale, flags = reference_meta(tasks, eta, t, sigma, split)
                value, grad = batch.value_and_gradient(eta, t, split=split)
                where = f"t={t}, eta*L={k}, split={split}"
                assert abs(value - value_ref) <= 1e-9 * value_ref, where
                assert abs(grad - grad_ref) <= 1e-7 * max(abs(grad_ref), grad_scale) + 1e-300, where
                assert batch.meta_objective(eta, t, split=split) == value
                assert batch.meta_gradient(eta, t, split=split) == grad
            assert flags is not None
            assert np.array_equal(batch.truncated(eta, t), flags), (t, k)
            truncation_counts.add(int(flags.sum()))
    # The grid exercises untruncated, partly truncated and fully truncated batches.
    assert 0 in truncation_counts and M in truncation_counts
    assert truncation_counts - {0, M}


def test_truncated_task_is_frozen_at_40_sigma_u() -> None:
    """A truncated task's loss is the loss at 40σ·u, u = ones/√d, and its derivative is 0."""
    sigma = 0.5
    tasks = draw_tasks(12, sigma, 1, 30, 0, 3)
    batch = LeastSquares(12, sigma).sample(1, 30, 0, seed=3)
    L = 1 / batch.step_size_scale()
    assert batch.truncated(10 / L, 10)[0]
    X, y = tasks[0].X, tasks[0].y
    frozen = TRUNCATION_RADIUS * sigma * np.ones(12) / math.sqrt(12)
    expected = float(np.sum((y - X @ frozen) ** 2) / (2 * len(y)))
    value, grad = batch.value_and_gradient(10 / L, 10)
    assert value == pytest.approx(expected, rel=1e-12)
    assert grad == 0.0


def test_rank_deficient_design_matches_gd_loop() -> None:
    """With duplicated columns (rank < min(n, d)) the closed form still equals GD."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((20, 6))
    X = np.concatenate([X, X[:, :3], 2 * X[:, 1:2]], axis=1)  # d = 10, rank 6
    y = X[:, :6] @ rng.standard_normal(6) + rng.standard_normal(20)
    Xv = np.concatenate([rng.standard_normal((8, 6))] * 1, axis=1)
    Xv = np.concatenate([Xv, Xv[:, :3], 2 * Xv[:, 1:2]], axis=1)
    yv = rng.standard_normal(8)
    batch = LeastSquares.from_data(X, y, Xv, yv, sigma=1.0)
    L = 1 / batch.step_size_scale()
    task = TaskData(X, y, Xv, yv, np.zeros(10))
    for t in (1, 7, 40):
        for k in (0.1, 1.0, 1.9):
            for split in ("train", "valid"):
                value_ref, grad_ref, scale, _ = reference_meta([task], k / L, t, 1.0, split)
                value, grad = batch.value_and_gradient(k / L, t, split=split)
                assert abs(value - value_ref) <= 1e-9 * value_ref
                assert abs(grad - grad_ref) <= 1e-7 * max(abs(grad_ref), scale)


def test_log_objective_is_log_of_mean_over_t(ls_batch: LeastSquaresBatch) -> None:
    """log=True returns (1/t)·log F̂ and its derivative F̂'/(t F̂)."""
    L = 1 / ls_batch.step_size_scale()
    for t in (1, 5, 40):
        for k in (0.1, 1.0, 1.9, 3.0):
            for split in ("train", "valid"):
                value, grad = ls_batch.value_and_gradient(k / L, t, split=split, log=False)
                log_value, log_grad = ls_batch.value_and_gradient(k / L, t, split=split, log=True)
                assert log_value == pytest.approx(math.log(value) / t, rel=1e-12, abs=1e-15)
                assert log_grad == pytest.approx(grad / (t * value), rel=1e-12, abs=1e-300)


def test_eigenvalues_and_scale(ls_batch: LeastSquaresBatch) -> None:
    """eigenvalues are s_j²/n of each task's training matrix; step_size_scale is 1/max."""
    tasks = draw_tasks(30, 1.0, 4, 20, 10, 0)
    for i, task in enumerate(tasks):
        s = np.linalg.svd(task.X, compute_uv=False)
        assert np.allclose(np.sort(ls_batch.eigenvalues[i]), np.sort(s**2 / 20), rtol=1e-10)
    assert ls_batch.step_size_scale() == pytest.approx(1 / ls_batch.eigenvalues.max(), rel=1e-15)
    assert (ls_batch.m, ls_batch.d, ls_batch.n_train, ls_batch.n_valid) == (4, 30, 20, 10)


# ---------------------------------------------------------------------- from_data / sample
def _assert_same_batches(
    a: LeastSquaresBatch, b: LeastSquaresBatch, splits: tuple[str, ...]
) -> None:
    L = 1 / a.step_size_scale()
    assert a.step_size_scale() == pytest.approx(b.step_size_scale(), rel=1e-13)
    for t in (1, 10, 40):
        for k in (0.0, 0.3, 1.0, 1.9, 2.5, 10.0):
            for split in splits:
                va, ga = a.value_and_gradient(k / L, t, split=split)
                vb, gb = b.value_and_gradient(k / L, t, split=split)
                assert va == pytest.approx(vb, rel=1e-12)
                assert ga == pytest.approx(gb, rel=1e-9, abs=1e-12 * abs(va) * L)
            assert np.array_equal(a.truncated(k / L, t), b.truncated(k / L, t))


def test_from_data_3d_equals_sampled_batch() -> None:
    """from_data on (m, n, d) arrays gives the batch sample() builds from the same draws."""
    tasks = draw_tasks(D, 1.0, M, 20, 30, 5)
    sampled = LeastSquares(D, 1.0).sample(M, 20, 30, seed=5)
    built = LeastSquares.from_data(
        np.stack([t.X for t in tasks]),
        np.stack([t.y for t in tasks]),
        np.stack([t.X_valid for t in tasks]),
        np.stack([t.y_valid for t in tasks]),
        sigma=1.0,
        w_star=np.stack([t.w_star for t in tasks]),
    )
    assert built.m == M and built.n_valid == 30
    _assert_same_batches(sampled, built, ("train", "valid"))
    for k in (0.5, 1.5, 4.0):
        eta = k * sampled.step_size_scale()
        a, b = sampled.evaluate(eta, 40), built.evaluate(eta, 40)
        assert np.allclose(a.sq_error, b.sq_error, rtol=1e-10)


def test_from_data_2d_equals_single_sampled_task() -> None:
    """from_data on (n, d) arrays is a batch of one task, equal to sample(1, ...)."""
    (task,) = draw_tasks(D, 0.7, 1, 45, 12, 9)
    sampled = LeastSquares(D, 0.7).sample(1, 45, 12, seed=9)
    built = LeastSquares.from_data(
        task.X, task.y, task.X_valid, task.y_valid, sigma=0.7, w_star=task.w_star
    )
    assert built.m == 1
    _assert_same_batches(sampled, built, ("train", "valid"))
    train_only = LeastSquares.from_data(task.X, task.y, sigma=0.7)
    assert train_only.n_valid == 0
    _assert_same_batches(sampled, train_only, ("train",))


def test_tbt_and_tbv_samples_share_data() -> None:
    """sample(m, 500, 0, s) and sample(m, 250, 250, s) hold the same samples, split differently."""
    ls = LeastSquares(20, 1.0)
    tbt = ls.sample(3, 500, 0, seed=4)
    tbv = ls.sample(3, 250, 250, seed=4)
    # Independent of how the draws are made: at η = 0 every loss is ‖y‖²/2n, so the
    # TbT loss on 500 samples is the mean of the TbV train and valid losses.
    total = tbt.meta_objective(0.0, 5)
    halves = 0.5 * (
        tbv.meta_objective(0.0, 5, split="train") + tbv.meta_objective(0.0, 5, split="valid")
    )
    assert total == pytest.approx(halves, rel=1e-13)
    # And both are the documented draws.
    tasks = draw_tasks(20, 1.0, 3, 500, 0, 4)
    X = np.stack([t.X for t in tasks])
    y = np.stack([t.y for t in tasks])
    _assert_same_batches(tbt, LeastSquares.from_data(X, y), ("train",))
    split = LeastSquares.from_data(X[:, :250], y[:, :250], X[:, 250:], y[:, 250:])
    _assert_same_batches(tbv, split, ("train", "valid"))


# ---------------------------------------------------------------------- robustness
def test_values_finite_for_huge_step_sizes(ls_batch: LeastSquaresBatch) -> None:
    """Value and derivative are finite for η up to 1e3/L, both splits, log and plain."""
    L = 1 / ls_batch.step_size_scale()
    for t in (1, 2, 40, 80, 1000):
        for eta in np.logspace(-3, 3, 25) / L:
            for split in ("train", "valid"):
                for log in (True, False):
                    value, grad = ls_batch.value_and_gradient(float(eta), t, split=split, log=log)
                    assert math.isfinite(value) and math.isfinite(grad), (t, eta * L, split, log)
    # Far beyond divergence every task is frozen: constant value, zero derivative.
    assert ls_batch.truncated(1e3 / L, 40).all()
    assert ls_batch.meta_gradient(1e3 / L, 40) == 0.0


def test_valid_split_long_unroll_emits_no_overflow_warning(ls_batch: LeastSquaresBatch) -> None:
    """split='valid' at a truncating step size and t = 1000 is finite and warning-free."""
    L = 1 / ls_batch.step_size_scale()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        value, grad = ls_batch.value_and_gradient(5 / L, 1000, split="valid")
    assert math.isfinite(value) and grad == 0.0


# ---------------------------------------------------------------------- evaluate()
def test_evaluate_matches_gd_loop() -> None:
    """evaluate(): sq_error = ‖w_t − w*‖² (loop), test_rmse = √(sq_error + σ²), train_rmse."""
    sigma = 0.3
    ls = LeastSquares(D, sigma)
    tasks = draw_tasks(D, sigma, 5, 25, 0, 21)
    L = 1 / ls.sample(5, 25, 0, seed=21).step_size_scale()
    seen_truncated = False
    for t in (1, 5, 40):
        for k in (0.1, 1.0, 1.9, 2.2, 4.0):
            ev = ls.evaluate(k / L, t, n_train=25, m=5, seed=21)
            assert ev.eta == k / L and ev.t == t
            for i, task in enumerate(tasks):
                run = gd_with_tangent(task.X, task.y, k / L, t, sigma)
                sq = float(np.sum((run.w - task.w_star) ** 2))
                assert ev.sq_error[i] == pytest.approx(sq, rel=1e-9, abs=1e-12)
                train_loss, _ = loss_and_tangent(task.X, task.y, run)
                assert ev.train_rmse[i] == pytest.approx(math.sqrt(2 * train_loss), rel=1e-9)
                assert ev.truncated[i] == run.truncated
                seen_truncated |= run.truncated
            assert np.allclose(ev.test_rmse, np.sqrt(ev.sq_error + sigma**2), rtol=1e-15)
            summary = ev.summary()
            assert summary["test_rmse"] == pytest.approx(float(np.mean(ev.test_rmse)))
            assert summary["truncated_fraction"] == pytest.approx(float(np.mean(ev.truncated)))
    assert seen_truncated


def test_evaluate_long_unroll_emits_no_overflow_warning() -> None:
    """evaluate() at a truncating step size and t = 1000 is warning-free."""
    batch = LeastSquares(30, 1.0).sample(4, 20, 0, seed=0)
    L = 1 / batch.step_size_scale()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ev = batch.evaluate(5 / L, 1000)
    assert ev.truncated.all() and np.all(np.isfinite(ev.test_rmse))


def test_evaluate_needs_ground_truth() -> None:
    """A batch built from data without w_star refuses evaluate() with a ValueError."""
    (task,) = draw_tasks(5, 1.0, 1, 10, 0, 0)
    with pytest.raises(ValueError, match="w_star"):
        LeastSquares.from_data(task.X, task.y).evaluate(0.1, 3)


# ---------------------------------------------------------------------- TbT vs TbV (Section 4)
def test_train_by_validation_beats_train_by_train() -> None:
    """With n < d and σ = 1, TbT picks an aggressive η (≳ 1/L) that overfits; TbV picks a much
    smaller one whose test RMSE on fresh tasks is lower (paper, Section 4, Fig 2)."""
    d, sigma, m, t = 100, 1.0, 30, 40
    ls = LeastSquares(d, sigma)
    tbt = ls.sample(m, 50, 0, seed=1)
    tbv = ls.sample(m, 25, 25, seed=1)
    L = 1 / tbt.step_size_scale()
    grid = np.logspace(-3, 1, 81) / L
    eta_tbt = GridSearch(grid=grid).fit(tbt, t=t).step_size_
    eta_tbv = GridSearch(grid=grid).fit(tbv, t=t, split="valid").step_size_
    assert eta_tbt >= 0.5 / L
    assert eta_tbt >= 20 * eta_tbv
    rmse_tbt = ls.evaluate(eta_tbt, t, n_train=50, m=10, seed=123).test_rmse.mean()
    rmse_tbv = ls.evaluate(eta_tbv, t, n_train=50, m=10, seed=123).test_rmse.mean()
    assert rmse_tbv < rmse_tbt
    # The meta-gradient tuner finds the same minimisers as a fine grid, in fewer evaluations.
    for batch, split, eta_grid in ((tbt, "train", eta_tbt), (tbv, "valid", eta_tbv)):
        tuner = StepSizeTuner().fit(batch, t=t, split=split)
        assert tuner.converged_
        assert tuner.n_evals_ < len(grid)
        grid_best = GridSearch(grid=grid).fit(batch, t=t, split=split).meta_objective_
        assert tuner.meta_objective_ <= grid_best + 1e-12 * abs(grid_best)
        assert 0.8 * eta_grid <= tuner.step_size_ <= 1.25 * eta_grid


@pytest.mark.slow
def test_train_by_validation_beats_train_by_train_paper_size() -> None:
    """The Fig-2 comparison at the paper's size: d = 1000, n = 500 vs 250 + 250, σ = 1, t = 40."""
    d, sigma, m, t = 1000, 1.0, 8, 40
    ls = LeastSquares(d, sigma)
    tbt = ls.sample(m, 500, 0, seed=2)
    tbv = ls.sample(m, 250, 250, seed=2)
    L = 1 / tbt.step_size_scale()
    grid = np.logspace(-3, 1, 41) / L
    eta_tbt = GridSearch(grid=grid).fit(tbt, t=t).step_size_
    eta_tbv = GridSearch(grid=grid).fit(tbv, t=t, split="valid").step_size_
    assert eta_tbt >= 0.5 / L
    assert eta_tbt > 5 * eta_tbv
    rmse_tbt = ls.evaluate(eta_tbt, t, n_train=500, m=5, seed=99).test_rmse.mean()
    rmse_tbv = ls.evaluate(eta_tbv, t, n_train=500, m=5, seed=99).test_rmse.mean()
    assert rmse_tbv < rmse_tbt


def test_compare_tbt_tbv_plan() -> None:
    """The one TbT-vs-TbV comparison (CLI, fig2/fig3, benchmark): TbT on all n samples, TbV on
    the same samples split, both from the training seed; each η tested on the same new tasks
    trained on all n samples; the rule sees each batch once, with its split and label."""
    from l2l_tune.reproduce.least_squares import TEST_SEED_OFFSET, compare_tbt_tbv

    d, sigma, m, t, n, seed = 20, 1.0, 3, 10, 30, 5
    ls = LeastSquares(d, sigma)
    seen: list[tuple[str, str, int, int]] = []

    def rule(batch: LeastSquaresBatch, split: str, label: str) -> dict[str, float]:
        seen.append((split, label, batch.n_train, batch.n_valid))
        reference = ls.sample(m, batch.n_train, batch.n_valid, seed=seed)
        assert np.array_equal(batch.eigenvalues, reference.eigenvalues)
        return {"eta": 0.1 if split == "train" else 0.01, "extra": 1.0}

    compared = compare_tbt_tbv(ls, n, rule, m=m, t=t, seed=seed, n_valid=12, m_test=4)
    assert seen == [("train", "TbT(30)", 30, 0), ("valid", "TbV(18+12)", 18, 12)]
    test = ls.sample(4, n, 0, seed=seed + TEST_SEED_OFFSET)
    for name, eta in (("TbT", 0.1), ("TbV", 0.01)):
        side = compared.sides[name]
        assert side.eta == eta
        np.testing.assert_array_equal(side.test.test_rmse, test.evaluate(eta, t).test_rmse)
        assert side.row()["extra"] == 1.0
        assert side.row()["test_rmse"] == side.test.summary()["test_rmse"]
    row = compared.row()
    assert row["gap"] == compared.gap == row["TbT"]["test_rmse"] - row["TbV"]["test_rmse"]
    # Defaults: n − n // 2 validation samples; one side only; the test seed can be set.
    only = compare_tbt_tbv(ls, 31, rule, m=m, t=t, seed=seed, sides=("TbV",), test_seed=1)
    assert list(only.sides) == ["TbV"] and only.sides["TbV"].label == "TbV(15+16)"
    assert "gap" not in only.row()
    np.testing.assert_array_equal(
        only.sides["TbV"].test.test_rmse, ls.evaluate(0.01, t, 31, m=10, seed=1).test_rmse
    )
    for kwargs, match in (({"n_valid": 30}, "n_valid"), ({"sides": ("TbX",)}, "sides")):
        with pytest.raises(ValueError, match=match):
            compare_tbt_tbv(ls, n, rule, m=m, t=t, seed=seed, **kwargs)


def test_compare_tbt_tbv_rejects_bad_sides_and_n_valid() -> None:
    """An unknown or empty ``sides``, or ``n_valid`` outside [1, n − 1] with TbV, is a
    ValueError naming the argument, raised before any task is drawn or tuned."""
    from l2l_tune.reproduce.least_squares import compare_tbt_tbv

    def rule(batch: LeastSquaresBatch, split: str, label: str) -> dict[str, float]:
        raise AssertionError("the rule must not run on bad input")

    ls = LeastSquares(10, 1.0)
    for sides in ((), ("TbT", "tbv")):
        with pytest.raises(ValueError, match="^sides must name 'TbT' and/or 'TbV'"):
            compare_tbt_tbv(ls, 20, rule, m=2, t=5, seed=0, sides=sides)
    for n_valid in (0, 20, 25):
        with pytest.raises(ValueError, match=r"^n_valid must be in \[1, n − 1\] = \[1, 19\]"):
            compare_tbt_tbv(ls, 20, rule, m=2, t=5, seed=0, n_valid=n_valid)


def test_draw_tasks_are_the_documented_draws_that_sample_splits() -> None:
    """draw_tasks yields the documented draws, and sample splits exactly those."""
    problem = LeastSquares(7, 0.5)
    drawn = list(problem.draw_tasks(3, 20, seed=11))
    reference = draw_tasks(7, 0.5, 3, 20, 0, 11)
    assert len(drawn) == 3
    for (X, y, w_star), task in zip(drawn, reference, strict=True):
        np.testing.assert_array_equal(X, task.X)
        np.testing.assert_array_equal(y, task.y)
        np.testing.assert_array_equal(w_star, task.w_star)
    tbv = problem.sample(3, 12, 8, seed=11)  # the same draws, split 12 + 8
    X = np.stack([x for x, _, _ in drawn])
    y = np.stack([v for _, v, _ in drawn])
    split = LeastSquares.from_data(X[:, :12], y[:, :12], X[:, 12:], y[:, 12:], sigma=0.5)
    _assert_same_batches(tbv, split, ("train", "valid"))
    for name, value in (("m", 0), ("n", 0)):
        with pytest.raises(ValueError, match=f"{name} must"):
            problem.draw_tasks(**{"m": 1, "n": 1, name: value})
