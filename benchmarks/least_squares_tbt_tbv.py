"""Train-by-train vs train-by-validation on least squares at the paper's settings (Figs 2–3).

For each noise level σ (sample size n fixed) and each n (σ fixed), learns η by TbT
on n samples and by TbV on the same samples split n/2 + n/2 (d = 1000, t = 40,
m = 300 training tasks), then applies each η to all n samples of 10 new tasks and
reports the population test RMSE ``sqrt(‖w_t − w*‖² + σ²)`` (mean and range), the
training RMSE, ``η`` in units of ``1/L`` and the number of meta-gradient
evaluations. The 25-point grid of the paper is run beside the tuner as a check.

Run: ``python benchmarks/least_squares_tbt_tbv.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from l2l_tune import GridSearch, LeastSquares, StepSizeTuner


def run_setting(d: int, n: int, sigma: float, m: int, t: int, seed: int) -> dict[str, Any]:
    """TbT(n) and TbV(n/2 + n/2) on identical samples; test on 10 new tasks."""
    dist = LeastSquares(d, sigma=sigma)
    out: dict[str, Any] = {"d": d, "n": n, "sigma": sigma, "m": m, "t": t}
    half = n // 2
    for name, n_train, n_valid, split in (("TbT", n, 0, "train"), ("TbV", half, n - half, "valid")):
        start = time.perf_counter()
        batch = dist.sample(m, n_train, n_valid, seed=seed)
        built = time.perf_counter() - start
        tuner = StepSizeTuner().fit(batch, t=t, split=split)
        grid = GridSearch().fit(batch, t=t, split=split, log=False)
        test = dist.evaluate(tuner.step_size_, t, n_train=n, m=10, seed=seed + 1).summary()
        out[name] = {
            "eta": tuner.step_size_,
            "eta_times_L": tuner.step_size_ / batch.step_size_scale(),
            "L": 1.0 / batch.step_size_scale(),
            "n_evals": tuner.n_evals_,
            "grid_eta": grid.step_size_,
            "build_seconds": built,
            **{k: v for k, v in test.items() if k != "eta"},
        }
    return out


def main() -> None:
    """Run the σ sweep and the n sweep; write JSON, a markdown table and a plot."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="d=200, m=30 (for a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    d, m = (200, 30) if args.quick else (1000, 300)
    t = 40
    sigmas = [0.5, 1.0, 2.0, 3.0]
    ns = [500, 1000, 2000, 4000] if not args.quick else [100, 200, 800]
    base_n = 500 if not args.quick else 100
    sigma_rows = [run_setting(d, base_n, s, m, t, seed=0) for s in sigmas]
    n_rows = [run_setting(d, n, 1.0, m, t, seed=0) for n in ns]
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"sigma_sweep": sigma_rows, "n_sweep": n_rows}
    (args.out / "least_squares.json").write_text(json.dumps(payload, indent=2) + "\n")

    def table(rows: list[dict[str, Any]], key: str) -> str:
        lines = [
            f"| {key} | η TbT (×1/L) | η TbV (×1/L) | test RMSE TbT [range] "
            "| test RMSE TbV [range] | train RMSE TbT | train RMSE TbV | evals TbT/TbV |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            a, b = r["TbT"], r["TbV"]
            lines.append(
                f"| {r[key]:g} | {a['eta']:.4g} ({a['eta_times_L']:.2f}) | {b['eta']:.4g} "
                f"({b['eta_times_L']:.3f}) | {a['test_rmse']:.3f} [{a['test_rmse_min']:.3f}, "
                f"{a['test_rmse_max']:.3f}] | {b['test_rmse']:.3f} [{b['test_rmse_min']:.3f}, "
                f"{b['test_rmse_max']:.3f}] | {a['train_rmse']:.3f} | {b['train_rmse']:.3f} "
                f"| {a['n_evals']}/{b['n_evals']} |"
            )
        return "\n".join(lines)

    md = (
        f"### Noise sweep (n = {base_n}, d = {d}, t = {t}, m = {m})\n\n"
        f"{table(sigma_rows, 'sigma')}\n\n"
        f"### Sample-size sweep (σ = 1, d = {d}, t = {t}, m = {m})\n\n{table(n_rows, 'n')}\n"
    )
    (args.out / "least_squares.md").write_text(md)
    print(md)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, rows, key, label in ((axes[0], sigma_rows, "sigma", "σ"), (axes[1], n_rows, "n", "n")):
        xs = [r[key] for r in rows]
        for name, marker in (("TbT", "o"), ("TbV", "s")):
            mean = [r[name]["test_rmse"] for r in rows]
            low = [r[name]["test_rmse"] - r[name]["test_rmse_min"] for r in rows]
            high = [r[name]["test_rmse_max"] - r[name]["test_rmse"] for r in rows]
            ax.errorbar(xs, mean, yerr=[low, high], marker=marker, capsize=3, label=f"{name} test")
            ax.plot(
                xs,
                [r[name]["train_rmse"] for r in rows],
                marker=marker,
                linestyle=":",
                label=f"{name} train",
            )
        ax.set_xlabel(label)
        ax.set_ylabel("RMSE")
        ax.legend()
    axes[0].set_title(f"Fig 2: RMSE vs σ (n = {base_n})")
    axes[1].set_title("Fig 3: RMSE vs n (σ = 1)")
    axes[1].set_xscale("log")
    fig.tight_layout()
    fig.savefig(args.out / "least_squares.png", dpi=120)
    print(f"wrote {args.out}/least_squares.{{json,md,png}}")


if __name__ == "__main__":
    main()
