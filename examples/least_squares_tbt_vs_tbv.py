"""Train-by-train vs train-by-validation on the paper's least-squares tasks (Section 4).

Run: ``python examples/least_squares_tbt_vs_tbv.py [--sigma 1.0] [--n 500]``.
"""

from __future__ import annotations

import argparse

from l2l_tune import GridSearch, LeastSquares, StepSizeTuner


def main() -> None:
    """Tune η by TbT and TbV on the same samples and test both on new tasks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument(
        "--n", type=int, default=500, help="samples per task (TbV splits them in half)"
    )
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--m", type=int, default=100, help="training tasks")
    parser.add_argument("--t", type=int, default=40)
    args = parser.parse_args()

    dist = LeastSquares(args.d, sigma=args.sigma)
    half = args.n // 2
    tbt = dist.sample(args.m, args.n, seed=0)
    tbv = dist.sample(args.m, half, args.n - half, seed=0)
    for name, batch, split in (("TbT", tbt, "train"), ("TbV", tbv, "valid")):
        tuned = StepSizeTuner().fit(batch, t=args.t, split=split)
        grid = GridSearch().fit(batch, t=args.t, split=split, log=False)
        test = dist.evaluate(tuned.step_size_, args.t, n_train=args.n, m=10, seed=1).summary()
        print(
            f"{name}: eta={tuned.step_size_:.4g} ({tuned.n_evals_} meta-gradients; "
            f"25-point grid: {grid.step_size_:.4g})  test RMSE={test['test_rmse']:.4f}"
        )


if __name__ == "__main__":
    main()
