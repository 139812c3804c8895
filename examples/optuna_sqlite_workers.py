"""Four worker processes share one SQLite study; the sampler's state lives in the storage.

Each worker builds its own ``MetaGradientSampler`` (Optuna never stores samplers) and
reads the others' finished trials from the database; running trials' step sizes are
avoided, so the workers do not evaluate the same step size twice while searching.

Run: ``python examples/optuna_sqlite_workers.py [--db study.db]``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from pathlib import Path

import optuna
from l2l_tune.integrations.optuna import MetaGradientSampler, task_objective

from l2l_tune import Quadratic

STUDY = "l2l-quadratic"
T = 80


def worker(storage: str, n_trials: int) -> None:
    """One process: load the shared study and run trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = Quadratic.random(20, seed=0, variant="authors")
    study = optuna.load_study(
        study_name=STUDY, storage=storage, sampler=MetaGradientSampler(param="lr", eta0=0.1)
    )
    study.optimize(task_objective(task, T, param="lr", low=1e-4, high=1.0), n_trials=n_trials)


def main() -> None:
    """Create the study, run 4 workers, and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", type=Path, default=Path("l2l_optuna_example.db"))
    parser.add_argument("--trials-per-worker", type=int, default=10)
    args = parser.parse_args()
    storage = f"sqlite:///{args.db}"
    optuna.create_study(study_name=STUDY, storage=storage, load_if_exists=True)
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=worker, args=(storage, args.trials_per_worker)) for _ in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
    failed = [process.exitcode for process in workers if process.exitcode != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(workers)} workers failed (exit codes {failed})")
    study = optuna.load_study(study_name=STUDY, storage=storage)
    eta_star = Quadratic.random(20, seed=0, variant="authors").optimal_step_size(T)
    lrs = [t.params["lr"] for t in study.trials if "lr" in t.params]
    print(f"{len(study.trials)} trials, {len(set(lrs))} distinct step sizes")
    print(f"best lr {study.best_params['lr']:.10g}; eta* {eta_star:.10g}")


if __name__ == "__main__":
    main()
