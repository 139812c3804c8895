"""``MetaGradientSearch`` on a two-node Ray cluster (``ray.cluster_utils.Cluster``).

The module starts its own cluster (head and worker node, one CPU each, no GPU) in a
temporary ``RAY_TMPDIR`` and shuts it down at the end; it does not share the
``ray.init`` of ``test_ray_tune.py``. Everything here is ``slow`` (about 20 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ray_helpers import (
    OrderRecordingSearch,
    T,
    best_trial,
    check_convergence,
    fig1_quadratic,
    finished_trials,
    two_node_cluster,
)
from ray import tune

pytestmark = pytest.mark.slow

Q = fig1_quadratic()
ETA_STAR = Q.optimal_step_size(T)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Path]]:
    """A head and a worker node with one CPU each; yields the node ids and the temp dir."""
    with two_node_cluster(tmp_path_factory, "rc") as (_, __, base):
        import ray

        yield [node["NodeID"] for node in ray.nodes() if node["Alive"]], base


def test_cluster_has_two_nodes_with_one_cpu_each(two_nodes: tuple[list[str], Path]) -> None:
    """The fixture's cluster: two live nodes, two CPUs in all, no GPU."""
    import ray

    node_ids, _ = two_nodes
    assert len(node_ids) == 2
    resources = ray.cluster_resources()
    assert resources["CPU"] == 2.0 and resources.get("GPU", 0.0) == 0.0


def test_trials_run_on_both_nodes_and_converge(two_nodes: tuple[list[str], Path]) -> None:
    """30 trials (2 concurrent, one CPU each) of the quadratic with meta-gradients, each
    recording the id of the node it ran on: trials ran on both nodes, all on the cluster's
    nodes, the searcher (on the driver) finished 30 meta-steps, and the best ``lr`` is within
    1e-6 of η* (out-of-order runs: the known order-dependence bug, xfail)."""
    node_ids, base = two_nodes

    def trainable(config: dict[str, Any]) -> None:
        import time as _time

        import ray
        from ray import tune as _tune

        _time.sleep(0.3)  # long enough for the two trials in flight to overlap
        value, grad = Q.value_and_gradient(float(config["lr"]), T, log=False)
        _tune.report(
            {"loss": value, "loss_grad": grad, "node_id": ray.get_runtime_context().get_node_id()}
        )

    search = OrderRecordingSearch(metric="loss", mode="min", eta0=0.1)
    started = time.monotonic()
    results = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-4, 1.0)},
        tune_config=tune.TuneConfig(
            search_alg=search, num_samples=30, max_concurrent_trials=2, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(base / "results"), name="two_nodes", verbose=0),
    ).fit()
    print(f"30 trials on 2 nodes in {time.monotonic() - started:.1f} s")
    trials = finished_trials(results)
    assert len(trials) == 30
    used = [trial.metrics["node_id"] for trial in trials]
    assert set(used) == set(node_ids), f"trials per node: {[used.count(n) for n in node_ids]}"
    assert search.n_meta_steps == 30
    check_convergence(best_trial(results).config["lr"], ETA_STAR, search)


def test_meta_training_on_two_nodes_equals_one_process(two_nodes: tuple[list[str], Path]) -> None:
    """The MLP optimizer's meta-batch of four problems split over two Ray actors of one CPU
    each (so one per node): the meta-parameters and meta-losses after two trajectories equal
    those of one process to 1e-10 (float64); afterwards the actors are gone (CPUs free)."""
    pytest.importorskip("torch")
    import torch

    from l2l_tune.learned import MetaTrainingSchedule, meta_train
    from l2l_tune.tasks import MNIST

    digits = MNIST("digits", hidden=(8,), dtype="float64")
    schedule = MetaTrainingSchedule(
        n_train=60, n_valid=40, problems=4, trajectories=2, min_truncations=2,
        mean_extra_truncations=1.0, min_steps=4, mean_extra_steps=2.0,
    )  # fmt: skip
    local, local_records = meta_train(digits, schedule, seed=2)
    spread, records = meta_train(
        digits, schedule, seed=2, workers=2, worker_resources={"num_cpus": 1}, group_size=1
    )
    for a, b in zip(spread.tensors(), local.tensors(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    assert [r.steps for r in records] == [r.steps for r in local_records]
    for r, s in zip(records, local_records, strict=True):
        assert r.meta_loss == pytest.approx(s.meta_loss, rel=1e-10)
    import ray

    deadline = time.monotonic() + 30.0  # the killed actors give their CPUs back
    while ray.available_resources().get("CPU", 0.0) < 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0.0) == 2.0
