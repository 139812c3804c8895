"""The paper's Fig 1: meta-training η on a 20-dimensional quadratic (t = 80, η0 = 0.1).

Compares the stable meta-gradient (default meta-optimizer and the paper's projected
meta-GD) with unrolled float32 backprop, whose meta-gradient is NaN at this setting
(Corollary 1), so that the paper's meta-GD stays at η0.

Run: ``python examples/quadratic_fig1.py``.
"""

from __future__ import annotations

import warnings

from l2l_tune import ProjectedMetaGD, Quadratic, StepSizeTuner
from l2l_tune.meta import NonFiniteMetaGradientWarning


def main() -> None:
    """Print η after meta-training with each meta-gradient."""
    task = Quadratic.random(20, seed=0, variant="authors")
    t = 80
    eta_star = task.optimal_step_size(t)
    fast = StepSizeTuner(eta0=0.1).fit(task, t=t)
    print(f"eta* = {eta_star:.10g}")
    print(f"default meta-optimizer: eta = {fast.step_size_:.10g} after {fast.n_evals_} evaluations")

    paper = ProjectedMetaGD(eta0=0.1, lr=0.01)
    backprop = ProjectedMetaGD(eta0=0.1, lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteMetaGradientWarning)
        for _ in range(300):
            eta = paper.ask()
            paper.tell(eta, *task.value_and_gradient(eta, t))
            eta_b = backprop.ask()
            grad_b = task.meta_gradient(eta_b, t, method="backprop", dtype="float32")
            backprop.tell(eta_b, task.meta_objective(eta_b, t), grad_b)
    print(f"paper meta-GD, stable gradient, 300 steps: eta = {paper.ask():.6g}")
    print(f"paper meta-GD, float32 backprop, 300 steps: eta = {backprop.ask():.6g} (stuck at eta0)")


if __name__ == "__main__":
    main()
