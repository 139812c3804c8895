"""``MetaGradientSearch`` inside real ``tune.Tuner`` runs on one local Ray instance.

One ``ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)`` is shared by the whole
module (a module-scoped fixture; Ray is shut down at the end), with ``RAY_TMPDIR`` in a
temporary directory, ``RAY_AUTH_MODE=disabled``, ``RAY_USAGE_STATS_ENABLED=0`` and an
explicit ``storage_path`` for every run (GUIDE §5). The fast tests cost about 20 s
(Ray's start included); the ``slow`` ones about a minute more.

Runs use :class:`_ray_helpers.OrderRecordingSearch`, which is ``MetaGradientSearch`` plus a
record of the order Ray completed trials in (see ``check_convergence`` there).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _ray_helpers import (
    OrderRecordingSearch,
    T,
    best_trial,
    check_convergence,
    fig1_quadratic,
    finished_trials,
    ray_environment,
    relative_error,
)
from l2l_tune.integrations.ray import (
    HypergradientSearch,
    MetaGradientSearch,
    task_trainable,
    with_resources,
)
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator

from l2l_tune import LeastSquares

Q = fig1_quadratic()
ETA_STAR = Q.optimal_step_size(T)
TESTS_DIR = Path(__file__).resolve().parent


def lr_space() -> dict[str, Any]:
    return {"lr": tune.loguniform(1e-4, 1.0)}


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One local Ray instance (2 CPUs, no GPU) for the module; yields its temp directory."""
    with ray_environment(tmp_path_factory, "rt") as base:
        import ray

        assert not ray.is_initialized(), "another test left Ray running"
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
        try:
            yield base
        finally:
            ray.shutdown()


def run_config(base: Path, name: str) -> tune.RunConfig:
    return tune.RunConfig(storage_path=str(base / "results"), name=name, verbose=0)


def tune_config(search: Any, num_samples: int = 30) -> tune.TuneConfig:
    return tune.TuneConfig(
        search_alg=search, num_samples=num_samples, max_concurrent_trials=2, reuse_actors=True
    )


# ---------------------------------------------------------------------- fast
def test_ray_runs_in_the_private_temp_dir(ray_session: Path) -> None:
    """Ray's session files are under the test's RAY_TMPDIR; the cluster has 2 CPUs and no GPU."""
    import ray

    assert (ray_session / "ray").is_dir()
    resources = ray.cluster_resources()
    assert resources["CPU"] == 2.0 and resources.get("GPU", 0.0) == 0.0


def test_tuner_converges_with_gradients(ray_session: Path) -> None:
    """A Tuner run of 30 trials (2 concurrent, actors reused) on the Fig-1 quadratic with
    ``task_trainable``'s meta-gradients: every trial succeeds and reports ``loss``,
    ``loss_grad``, ``device="cpu"`` and no GPU; the searcher finishes 30 meta-steps; and the best
    result's ``lr`` is within 1e-6 (relative) of η* (runs whose trials completed out of order
    hit the known order-dependence bug: xfail)."""
    search = OrderRecordingSearch(metric="loss", mode="min", eta0=0.1)
    tuner = tune.Tuner(
        task_trainable(Q, T),
        param_space=lr_space(),
        tune_config=tune_config(search),
        run_config=run_config(ray_session, "quadratic_grad"),
    )
    started = time.monotonic()
    results = tuner.fit()
    elapsed = time.monotonic() - started
    trials = finished_trials(results)
    assert len(trials) == 30
    for trial in trials:
        assert trial.config["task_seed"] == 0 and 1e-4 <= trial.config["lr"] <= 1.0
        metrics = trial.metrics
        assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["loss_grad"])
        assert metrics["device"] == "cpu" and metrics["assigned_gpus"] == []
    assert search.n_meta_steps == 30
    assert len(search.suggested) == len(search.completed) == 30
    best = best_trial(results)
    print(f"30 trials in {elapsed:.1f} s; completed in order: {search.completed_in_order}")
    check_convergence(best.config["lr"], ETA_STAR, search)


def test_tuner_with_space_in_searcher_and_tasks_per_step(ray_session: Path) -> None:
    """A searcher built with ``space=`` (no ``param_space``) and ``tasks_per_step=2`` with a
    callable task (``task_seed -> task``): 6 trials make 3 meta-steps, each meta-step's two
    trials share one ``lr`` with task seeds 0 and 1, and each reports its own task's loss."""

    def make_task(task_seed: int) -> Any:
        return LeastSquares(30, 1.0).sample(1, 20, 20, seed=task_seed)

    search = MetaGradientSearch(
        metric="loss",
        mode="min",
        space=lr_space(),
        tasks_per_step=2,
        eta0=0.01,
        deterministic=True,
    )
    tuner = tune.Tuner(
        task_trainable(make_task, 40, split="valid"),
        tune_config=tune_config(search, num_samples=6),
        run_config=run_config(ray_session, "least_squares_m2"),
    )
    trials = finished_trials(tuner.fit())
    assert len(trials) == 6
    assert search.n_meta_steps == 3
    by_lr: dict[float, list[int]] = {}
    for trial in trials:
        lr, seed = trial.config["lr"], trial.config["task_seed"]
        by_lr.setdefault(lr, []).append(seed)
        expected = make_task(seed).value_and_gradient(lr, 40, split="valid", log=False)
        assert (trial.metrics["loss"], trial.metrics["loss_grad"]) == pytest.approx(expected)
    assert len(by_lr) == 3 and all(sorted(seeds) == [0, 1] for seeds in by_lr.values())


def test_tuner_resolves_the_space_and_warm_starts_from_its_results(ray_session: Path) -> None:
    """A Tuner run whose ``param_space`` has the step size nested, a ``sample_from`` reading
    it, domains in a list and a constant, with ``points_to_evaluate`` and
    ``max_concurrent_trials=2`` (honoured by the searcher itself): every trial's config is
    resolved as Ray resolves it and the point runs first. Its results then warm-start a new
    searcher through Ray's ``add_evaluated_trials`` (gradients included): the new searcher's
    first proposal is the old one's next."""
    space = {
        "optimizer": {"lr": tune.loguniform(1e-4, 1.0), "name": "sgd"},
        "decay": tune.sample_from(lambda config: config["optimizer"]["lr"] * 0.1),
        "layers": [tune.randint(1, 4), tune.quniform(0.0, 1.0, 0.5)],
    }
    search = MetaGradientSearch(
        "optimizer/lr",
        metric="loss",
        mode="min",
        eta0=0.1,
        deterministic=True,
        points_to_evaluate=[{"optimizer": {"lr": 0.01}}],
    )
    tuner = tune.Tuner(
        task_trainable(Q, T, param="optimizer/lr"),
        param_space=space,
        tune_config=tune_config(search, num_samples=10),
        run_config=run_config(ray_session, "space_and_warm_start"),
    )
    results = tuner.fit()
    trials = finished_trials(results)
    assert len(trials) == 10
    assert search._max_concurrent == 2  # ConcurrencyLimiter handed the limit over
    lrs = []
    for trial in trials:
        config = trial.config
        lr = config["optimizer"]["lr"]
        lrs.append(lr)
        assert config["optimizer"]["name"] == "sgd"
        assert config["decay"] == pytest.approx(lr * 0.1)
        assert 1 <= config["layers"][0] < 4 and config["layers"][1] in {0.0, 0.5, 1.0}
        assert trial.metrics["loss"] == pytest.approx(Q.value_and_gradient(lr, T, log=False)[0])
    assert 0.01 in lrs
    old_next = search.suggest("next")
    assert old_next is not None
    warm = MetaGradientSearch(
        "optimizer/lr", metric="loss", mode="min", meta_optimizer="bracket", space=space
    )
    warm.add_evaluated_trials(results._experiment_analysis, "loss")
    assert warm.n_meta_steps == 10
    first = warm.suggest("w0")
    assert first is not None
    assert first["optimizer"]["lr"] == pytest.approx(old_next["optimizer"]["lr"], rel=1e-12)


def test_with_resources_gpu_fails_fast(ray_session: Path) -> None:
    """``with_resources(trainable, {"gpu": 1})`` on this GPU-less cluster raises ValueError naming
    the GPU at once (Ray alone would leave the trial PENDING forever); too many CPUs likewise;
    a satisfiable request returns a trainable."""
    trainable = task_trainable(Q, T)
    started = time.monotonic()
    with pytest.raises(ValueError, match="GPU"):
        with_resources(trainable, {"gpu": 1})
    assert time.monotonic() - started < 5.0
    with pytest.raises(ValueError, match="CPU"):
        with_resources(trainable, {"cpu": 3})
    assert with_resources(trainable, {"cpu": 1}) is not None


# ---------------------------------------------------------------------- slow
@pytest.mark.slow
def test_tuner_least_squares_tbv_reaches_the_grid_optimum(ray_session: Path) -> None:
    """Train-by-validation least squares (8 tasks, t = 200) through the Tuner with meta-gradients:
    the best of 30 trials (2 concurrent) has a validation loss at most the minimum over a
    4001-point log grid of the domain."""
    batch = LeastSquares(30, 1.0).sample(8, 20, 20, seed=0)
    t = 200
    search = OrderRecordingSearch(metric="loss", mode="min", eta0=0.1)
    tuner = tune.Tuner(
        task_trainable(batch, t, split="valid"),
        param_space=lr_space(),
        tune_config=tune_config(search),
        run_config=run_config(ray_session, "least_squares_tbv"),
    )
    results = tuner.fit()
    assert len(finished_trials(results)) == 30
    best = best_trial(results)
    grid = np.geomspace(1e-4, 1.0, 4001)
    values = [batch.value_and_gradient(e, t, split="valid")[0] for e in grid]
    assert best.metrics["loss"] <= min(values) * (1 + 1e-12)


@pytest.mark.slow
def test_black_box_tuner_beats_random_search(ray_session: Path) -> None:
    """Without meta-gradients (the trainable reports its gradient under a key the searcher does
    not read), 30 trials of MetaGradientSearch find a lower best loss than 30 trials of Ray's
    random search (``BasicVariantGenerator``, seeded), and a step size within 2 % of η*."""
    trainable = task_trainable(Q, T, grad_metric="hidden_grad")
    search = OrderRecordingSearch(metric="loss", mode="min", eta0=0.1)
    meta = tune.Tuner(
        trainable,
        param_space=lr_space(),
        tune_config=tune_config(search),
        run_config=run_config(ray_session, "black_box"),
    ).fit()
    random = tune.Tuner(
        trainable,
        param_space=lr_space(),
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(random_state=0),
            metric="loss",
            mode="min",
            num_samples=30,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=run_config(ray_session, "random"),
    ).fit()
    assert len(finished_trials(meta)) == len(finished_trials(random)) == 30
    meta_best, random_best = best_trial(meta), best_trial(random)
    print(
        f"best loss: meta {meta_best.metrics['loss']:.6g}, random {random_best.metrics['loss']:.6g}"
    )
    assert meta_best.metrics["loss"] < random_best.metrics["loss"]
    assert relative_error(meta_best.config["lr"], ETA_STAR) <= 0.02
    assert "hidden_grad" in meta_best.metrics and "loss_grad" not in meta_best.metrics


_CHILD = """
import sys
sys.path.insert(0, {tests_dir!r})
import ray
from ray import tune
from _ray_helpers import T, OrderRecordingSearch, fig1_quadratic
from l2l_tune.integrations.ray import task_trainable

storage, name, address = sys.argv[1:4]
ray.init(address=address)
tune.Tuner(
    task_trainable(fig1_quadratic(), T),
    param_space={{"lr": tune.loguniform(1e-4, 1.0)}},
    tune_config=tune.TuneConfig(
        search_alg=OrderRecordingSearch(metric="loss", mode="min", eta0=0.1),
        num_samples=30, max_concurrent_trials=2, reuse_actors=True),
    run_config=tune.RunConfig(storage_path=storage, name=name, verbose=0),
).fit()
"""


def _finished_on_disk(experiment: Path) -> dict[str, float]:
    """Trial id -> lr of the trials whose result.json holds a result."""
    out: dict[str, float] = {}
    for result_file in experiment.glob("*/result.json"):
        lines = [line for line in result_file.read_text().splitlines() if line.strip()]
        try:
            record = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:  # being written right now
            continue
        if record is not None:
            out[record["trial_id"]] = float(record["config"]["lr"])
    return out


@pytest.mark.slow
def test_interrupted_tuner_restores_and_continues(ray_session: Path) -> None:
    """A Tuner run killed (SIGKILL of its driver process) after at least 8 finished trials and
    restored with ``Tuner.restore(..., resume_unfinished=True)`` continues: the searcher state
    saved before the kill had finished meta-steps; the restored run ends with 30 trials and 30
    meta-steps in all (not 30 more); trials finished before the kill keep their ids and step
    sizes; trials in flight at the kill resume under their ids and are told to the restored
    searcher; every record told before the kill is still there; no step size of a finished
    meta-step repeats (except repeats of η* itself once converged); and the best step size is
    within 1e-6 of η*."""
    import ray

    experiment_name = "interrupted"
    storage = ray_session / "results"
    experiment = storage / experiment_name
    script = ray_session / "interrupted_child.py"
    script.write_text(_CHILD.format(tests_dir=str(TESTS_DIR)))
    env = dict(os.environ, TUNE_GLOBAL_CHECKPOINT_S="0")  # save experiment state every step
    log = (ray_session / "interrupted_child.log").open("w")
    child = subprocess.Popen(
        [sys.executable, str(script), str(storage), experiment_name,
         ray.get_runtime_context().gcs_address],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while len(_finished_on_disk(experiment)) < 8 and time.monotonic() < deadline:
            assert child.poll() is None, f"the Tuner ended before it was killed; see {log.name}"
            time.sleep(0.05)
        assert len(_finished_on_disk(experiment)) >= 8, "no progress within 180 s"
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        log.close()
    before_kill = _finished_on_disk(experiment)
    saved = OrderRecordingSearch(eta0=0.1)
    saved.restore_from_dir(str(experiment))
    assert 1 <= saved.n_meta_steps < 30
    records_before = saved.meta_optimizer_state().history
    in_flight = [t for t in saved.suggested if t not in saved.completed]

    results = tune.Tuner.restore(
        str(experiment), trainable=task_trainable(Q, T), resume_unfinished=True
    ).fit()
    configs = {trial.metrics["trial_id"]: trial.config for trial in finished_trials(results)}
    assert len(configs) == 30
    for trial_id, lr in before_kill.items():
        if trial_id in configs:  # (a trial created after the last checkpoint is not)
            assert configs[trial_id]["lr"] == lr
    assert len(set(before_kill) & set(configs)) >= saved.n_meta_steps
    assert set(in_flight) <= set(configs), "a trial in flight at the kill was not resumed"

    final = OrderRecordingSearch(eta0=0.1)
    final.restore_from_dir(str(experiment))
    assert final.n_meta_steps == 30
    assert set(in_flight) <= set(final.completed)  # told to the restored searcher
    print(f"killed after {len(before_kill)} finished trials, {len(in_flight)} in flight")
    history = final.meta_optimizer_state().history
    assert not Counter(records_before) - Counter(history), "records told before the kill were lost"
    repeated = [eta for eta, n in Counter(r.eta for r in history).items() if n > 1]
    assert all(relative_error(eta, ETA_STAR) <= 1e-6 for eta in repeated), repeated
    check_convergence(best_trial(results).config["lr"], ETA_STAR, final)


def test_hypergradient_search_under_a_tuner(ray_session: Path) -> None:
    """``HypergradientSearch`` in a real Tuner (2 concurrent trials): a trainable reporting a
    mapping of derivatives (flattened by Ray) tunes ``lr`` and ``weight_decay`` together; every
    trial's config holds both within their domains and the estimate moves toward the optimum."""

    def trainable(config: dict[str, Any]) -> None:
        a = math.log(config["lr"] / 0.03)
        b = math.log(config["weight_decay"] / 1e-3)
        grads = {"lr": 2 * a / config["lr"], "weight_decay": b / config["weight_decay"]}
        tune.report({"loss": 1.0 + a * a + 0.5 * b * b, "loss_grad": grads})

    search = HypergradientSearch(("lr", "weight_decay"), metric="loss", mode="min")
    tuner = tune.Tuner(
        trainable,
        param_space={
            "lr": tune.loguniform(1e-5, 1.0),
            "weight_decay": tune.loguniform(1e-6, 1e-1),
        },
        tune_config=tune_config(search, num_samples=24),
        run_config=run_config(ray_session, "hypergradient_search"),
    )
    results = tuner.fit()
    trials = finished_trials(results)
    assert len(trials) == 24
    for trial in trials:
        assert 1e-5 <= trial.config["lr"] <= 1.0 and 1e-6 <= trial.config["weight_decay"] <= 0.1
        assert set(trial.metrics["loss_grad"]) == {"lr", "weight_decay"}
    first = math.log(math.sqrt(1e-5) / 0.03) ** 2
    got = search.meta_optimizer_state().estimate()
    assert math.log(got["lr"] / 0.03) ** 2 < 0.1 * first


def test_task_trainable_with_several_hyperparameters(ray_session: Path) -> None:
    """``task_trainable(params=...)`` reports a library task's gradient mapping: heavy-ball
    (lr, momentum) on a quadratic, tuned by ``HypergradientSearch`` in a Tuner, beats GD at
    its optimal step size within 20 trials (log-rate at least 1.5× GD's)."""
    from l2l_tune.tasks import Quadratic

    q = Quadratic.random(20, seed=0)
    best_gd = q.value_and_gradient(q.optimal_step_size(200), 200, log=True)[0]
    space = q.hyperparameter_space()
    search = HypergradientSearch(
        ("lr", "momentum"),
        metric="loss",
        mode="min",
        start={"lr": 1 / q.smoothness, "momentum": 0.0},
    )
    tuner = tune.Tuner(
        task_trainable(q, 200, params=("lr", "momentum")),
        param_space={
            p.name: (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
            for p in space.parameters
        },
        tune_config=tune_config(search, num_samples=20),
        run_config=run_config(ray_session, "task_trainable_vector"),
    )
    trials = finished_trials(tuner.fit())
    assert len(trials) == 20
    best = min(math.log(r.metrics["loss"]) / 200 for r in trials)
    assert best <= 1.5 * best_gd
