"""The Ray searchers' search spaces and extension points, driven directly (no Ray cluster).

* Every domain type of Ray's own sampling tests (``uniform`` … ``qlograndint``,
  ``choice``, ``randn``/``qrandn``, ``sample_from`` in its three spellings) anywhere in
  the space (nested dicts, lists, tuples) is resolved as Ray resolves it, beside the
  step size; ``tune.grid_search``, a quantized step size and a space that has the
  searcher's own seed key are refused with a ``ValueError`` naming them.
* Ray's ``Searcher`` extension points: ``set_max_concurrency`` (honoured, also under
  Ray's ``ConcurrencyLimiter``), ``points_to_evaluate`` with and without
  ``evaluated_rewards``, ``add_evaluated_point`` (before and after the space is known),
  and a warm start from an earlier search's results.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from _ray_helpers import T, fig1_quadratic, relative_error
from l2l_tune.integrations.ray import HypergradientSearch, MetaGradientSearch, task_trainable
from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from l2l_tune import Quadratic

Q = fig1_quadratic()
ETA_STAR = Q.optimal_step_size(T)
LOW, HIGH = 1e-4, 1.0


def quad_result(lr: float) -> dict[str, Any]:
    """What ``task_trainable(Q, 80)`` reports."""
    value, grad = Q.value_and_gradient(lr, T, log=False)
    return {"loss": value, "loss_grad": grad}


def full_space() -> dict[str, Any]:
    """Every domain type of Ray's sampling tests, at the top level, nested and in sequences."""
    return {
        "lr": tune.loguniform(LOW, HIGH),
        "uniform": tune.uniform(-2.0, 2.0),
        "quniform": tune.quniform(0.0, 1.0, 0.25),
        "qloguniform": tune.qloguniform(1e-3, 1.0, 1e-3),
        "randn": tune.randn(10.0, 2.0),
        "qrandn": tune.qrandn(10.0, 2.0, 0.5),
        "randint": tune.randint(-9, 15),
        "qrandint": tune.qrandint(-21, 12, 3),
        "lograndint": tune.lograndint(1, 100),
        "qlograndint": tune.qlograndint(2, 100, 2),
        "choice": tune.choice(["a", "b", "c"]),
        "from_config": tune.sample_from(lambda config: config["lr"] * 0.1),
        "from_spec": tune.sample_from(lambda spec: spec.config.lr * 10),
        "from_eval": {"eval": "spec.config.lr * 2"},
        "chained": tune.sample_from(lambda config: config["from_config"] + 1),
        "no_argument": tune.sample_from(lambda: 7),
        "nested": {"wd": tune.uniform(-1e-2, 0.0), "deep": {"k": tune.choice([1, 2])}},
        "listed": [tune.randint(0, 5), 3, {"x": tune.quniform(0.0, 10.0, 2.5)}],
        "tupled": (tune.choice([True, False]), "fixed"),
        "const": "abc",
    }


def is_multiple(value: float, quantum: float) -> bool:
    return math.isclose(value / quantum, round(value / quantum), abs_tol=1e-9)


def make_search(space: dict[str, Any], **kwargs: Any) -> MetaGradientSearch:
    options: dict[str, Any] = {"metric": "loss", "mode": "min", "eta0": 0.1, **kwargs}
    return MetaGradientSearch(deterministic=True, space=space, **options)


def run(search: MetaGradientSearch, n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` trials one at a time on the Fig-1 quadratic; returns their configs."""
    configs = []
    for i in range(start, start + n):
        config = search.suggest(f"t{i}")
        assert config is not None
        configs.append(config)
        search.on_trial_complete(f"t{i}", result=quad_result(float(config["lr"])))
    return configs


# ---------------------------------------------------------------------- the search space
def test_every_domain_type_is_resolved_as_ray_resolves_it() -> None:
    """20 trials: every domain is sampled within its range and quantum, wherever it sits;
    ``sample_from`` in all three spellings reads the step size of its own trial (and
    another function's value); constants pass through; the same seed repeats the configs."""

    def configs(seed: int) -> list[dict[str, Any]]:
        search = make_search(full_space(), param="lr", seed=seed)
        return run(search, 20)

    first = configs(0)
    assert first == configs(0)
    for c in first:
        lr = c["lr"]
        assert LOW <= lr <= HIGH
        assert -2 <= c["uniform"] <= 2
        assert 0 <= c["quniform"] <= 1 and is_multiple(c["quniform"], 0.25)
        assert 1e-3 <= c["qloguniform"] <= 1 and is_multiple(c["qloguniform"], 1e-3)
        assert isinstance(c["randn"], float) and is_multiple(c["qrandn"], 0.5)
        assert isinstance(c["randint"], int | np.integer) and -9 <= c["randint"] < 15
        assert -21 <= c["qrandint"] <= 12 and c["qrandint"] % 3 == 0
        assert 1 <= c["lograndint"] < 100
        assert 2 <= c["qlograndint"] <= 100 and c["qlograndint"] % 2 == 0
        assert c["choice"] in {"a", "b", "c"}
        assert c["from_config"] == pytest.approx(lr * 0.1)
        assert c["from_spec"] == pytest.approx(lr * 10)
        assert c["from_eval"] == pytest.approx(lr * 2)
        assert c["chained"] == pytest.approx(lr * 0.1 + 1)
        assert c["no_argument"] == 7
        assert -1e-2 <= c["nested"]["wd"] <= 0 and c["nested"]["deep"]["k"] in {1, 2}
        assert 0 <= c["listed"][0] < 5 and c["listed"][1] == 3
        assert 0 <= c["listed"][2]["x"] <= 10 and is_multiple(c["listed"][2]["x"], 2.5)
        assert c["tupled"][0] in {True, False} and c["tupled"][1] == "fixed"
        assert c["const"] == "abc" and c["task_seed"] == 0
    for key in ("uniform", "randint", "choice", "qrandint"):
        assert len({str(c[key]) for c in first}) > 1, key
    assert len({c["listed"][0] for c in first}) > 1
    assert relative_error(run(make_search(full_space(), param="lr"), 30)[-1]["lr"], ETA_STAR) < 1e-3


def test_the_step_size_can_sit_in_a_nested_dict() -> None:
    """``param="optimizer/lr"`` (Ray's flattened path), or ``param=None`` when it is the only
    continuous float domain; the gradient is read under ``loss_grad/optimizer/lr`` as Ray
    flattens a result; the search converges as with a top-level key."""
    for param in ("optimizer/lr", None):
        space = {"optimizer": {"lr": tune.loguniform(LOW, HIGH), "name": "sgd"}, "x": 1}
        search = make_search(space, param=param)
        lrs = []
        for i in range(30):
            config = search.suggest(f"t{i}")
            assert config is not None and config["optimizer"]["name"] == "sgd"
            lr = config["optimizer"]["lr"]
            lrs.append(lr)
            value, grad = Q.value_and_gradient(lr, T, log=False)
            search.on_trial_complete(
                f"t{i}", result={"loss": value, "loss_grad/optimizer/lr": grad}
            )
        assert relative_error(lrs[-1], ETA_STAR) < 1e-6


def test_task_trainable_reads_a_nested_step_size_and_a_custom_seed_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``task_trainable(param="optimizer/lr", seed_key=...)`` builds the task of the seed the
    searcher wrote under its ``seed_key`` and reads the nested step size (called outside Ray:
    ``tune.report`` is captured and ``ray.get_gpu_ids`` stubbed, which would otherwise start
    a Ray instance of its own)."""
    import ray
    import ray.tune as ray_tune

    seen: list[int] = []

    def make_task(seed: int) -> Quadratic:
        seen.append(seed)
        return Q

    reported: list[dict[str, Any]] = []
    monkeypatch.setattr(ray_tune, "report", lambda metrics, **_: reported.append(metrics))
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    trainable = task_trainable(make_task, T, param="optimizer/lr", seed_key="trial_seed")
    trainable({"optimizer": {"lr": 0.02}, "trial_seed": 3})
    assert seen == [3]
    assert reported[0]["loss"] == pytest.approx(Q.value_and_gradient(0.02, T, log=False)[0])
    assert not ray.is_initialized()


def test_grid_search_is_refused_naming_its_path() -> None:
    space = {"lr": tune.loguniform(LOW, HIGH), "opt": {"name": tune.grid_search(["sgd", "adam"])}}
    with pytest.raises(ValueError, match=r"grid_search \(found at \['opt/name'\]\)"):
        make_search(space).suggest("t0")


@pytest.mark.parametrize(
    "domain", [tune.quniform(0.0, 1.0, 0.01), tune.qloguniform(1e-4, 1.0, 1e-4)]
)
def test_a_quantized_step_size_is_refused_naming_its_quantum(domain: Any) -> None:
    with pytest.raises(ValueError, match=r"quantized, q=0\.\d+.*continuous"):
        make_search({"lr": domain}, param="lr").suggest("t0")


def test_param_none_refuses_two_nested_candidates() -> None:
    space = {"a": {"lr": tune.loguniform(LOW, HIGH)}, "b": {"wd": tune.uniform(0.0, 1.0)}}
    with pytest.raises(ValueError, match=r"found \['a/lr', 'b/wd'\]\. Pass param="):
        make_search(space).suggest("t0")


def test_a_users_own_task_seed_is_not_overwritten() -> None:
    """A space with its own ``task_seed`` is refused (it would be overwritten silently);
    with ``seed_key="trial_seed"`` the user's value passes through untouched."""
    space = {"lr": tune.loguniform(LOW, HIGH), "task_seed": 1234}
    with pytest.raises(ValueError, match="its own key 'task_seed'.*seed_key="):
        make_search(dict(space)).suggest("t0")
    search = make_search(dict(space), seed_key="trial_seed", tasks_per_step=2)
    first, second = search.suggest("t0"), search.suggest("t1")
    assert first is not None and second is not None
    assert first["task_seed"] == second["task_seed"] == 1234
    assert (first["trial_seed"], second["trial_seed"]) == (0, 1)
    with pytest.raises(ValueError, match="seed_key must be a non-empty string"):
        MetaGradientSearch(seed_key="")


def test_a_failing_sample_from_names_its_path() -> None:
    space = {"lr": tune.loguniform(LOW, HIGH), "bad": tune.sample_from(lambda config: 1 / 0)}
    with pytest.raises(ValueError, match=r"sample_from at 'bad' failed"):
        make_search(space).suggest("t0")


def test_hypergradient_search_resolves_the_same_space() -> None:
    """The vector searcher fixes its tuned keys (one nested) and resolves the rest, too."""
    space = full_space()
    space["nested"]["wd"] = tune.loguniform(1e-6, 1e-2)
    search = HypergradientSearch(("lr", "nested/wd"), metric="loss", mode="min", space=space)
    config = search.suggest("t0")
    assert config is not None
    assert config["from_config"] == pytest.approx(config["lr"] * 0.1)
    assert 1e-6 <= config["nested"]["wd"] <= 1e-2
    assert is_multiple(config["listed"][2]["x"], 2.5)
    space["g"] = tune.grid_search([1, 2])
    with pytest.raises(ValueError, match="grid_search"):
        HypergradientSearch(("lr",), metric="loss", mode="min", space=space).suggest("t0")


# ---------------------------------------------------------------------- concurrency
@pytest.mark.parametrize("searcher", ["meta", "vector"])
def test_set_max_concurrency_is_honoured(searcher: str) -> None:
    """``set_max_concurrency(2)`` returns ``True`` (Ray's ``ConcurrencyLimiter`` then leaves
    the limit to the searcher): a third suggestion is ``None`` until a trial completes; the
    limit survives ``get_state``/``set_state``."""
    space = {"lr": tune.loguniform(LOW, HIGH)}
    search: Searcher
    if searcher == "meta":
        search = make_search(space)
    else:
        search = HypergradientSearch(("lr",), metric="loss", mode="min", space=space)
    limiter = ConcurrencyLimiter(search, max_concurrent=2)
    assert limiter._limit_concurrency is False  # the searcher handles it
    a, b = search.suggest("t0"), search.suggest("t1")
    assert a is not None and b is not None
    assert search.suggest("t2") is None
    search.on_trial_complete("t0", result=quad_result(a["lr"]))
    assert search.suggest("t2") is not None
    assert search.suggest("t3") is None
    state = search.get_state()
    fresh = make_search(space) if searcher == "meta" else HypergradientSearch(("lr",))
    fresh.set_state(state)
    assert fresh.suggest("t3") is None
    with pytest.raises(ValueError, match="max_concurrent"):
        search.set_max_concurrency(0)


# ---------------------------------------------------------------------- points and rewards
def test_points_to_evaluate_run_first_with_their_other_entries() -> None:
    """Two points (one nested, one flattened), ``tasks_per_step=2``: the first four trials
    run them (each point's other entries set, the rest sampled), then the engine proposes."""
    space = {"lr": tune.loguniform(LOW, HIGH), "opt": {"wd": tune.uniform(0.0, 1.0)}, "b": 1}
    points = [{"lr": 0.01, "opt": {"wd": 0.5}}, {"lr": 0.05, "opt/wd": 0.25}]
    search = make_search(space, points_to_evaluate=points, tasks_per_step=2)
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert [(c["lr"], c["opt"]["wd"], c["task_seed"]) for c in configs] == [  # type: ignore[index]
        (0.01, 0.5, 0),
        (0.01, 0.5, 1),
        (0.05, 0.25, 0),
        (0.05, 0.25, 1),
    ]
    for i, config in enumerate(configs):
        assert config is not None
        search.on_trial_complete(f"t{i}", result=quad_result(config["lr"]))
    assert search.n_meta_steps == 2
    following = search.suggest("t4")
    assert following is not None and following["lr"] not in {0.01, 0.05}


def test_evaluated_rewards_are_told_not_run() -> None:
    """With ``evaluated_rewards`` the points are records at once (a NaN reward is a failed
    run, its step size avoided): the first suggestion is already the engine's."""
    points = [{"lr": 0.01}, {"lr": 0.9}, {"lr": 0.05}]
    rewards = [quad_result(0.01)["loss"], math.nan, quad_result(0.05)["loss"]]
    search = make_search(
        {"lr": tune.loguniform(LOW, HIGH)},
        points_to_evaluate=points,
        evaluated_rewards=rewards,
        meta_optimizer="model",
    )
    config = search.suggest("t0")
    assert config is not None and config["lr"] not in {0.01, 0.9, 0.05}
    assert search.n_meta_steps == 3
    records = search.meta_optimizer_state()
    assert records is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"points_to_evaluate": [{"lr": 0.1}], "evaluated_rewards": [1.0, 2.0]}, "one value"),
        ({"points_to_evaluate": [{"lr": 0.1}], "evaluated_rewards": ["x"]}, r"rewards\[0\]"),
        ({"points_to_evaluate": [0.1]}, r"points_to_evaluate\[0\] must be a mapping"),
    ],
)
def test_bad_points_are_refused_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetaGradientSearch(metric="loss", mode="min", **kwargs)


@pytest.mark.parametrize(
    ("point", "match"),
    [
        ({"wd": 0.1}, "must give the step size 'lr'"),
        ({"lr": 5.0}, r"outside the step size's bounds \[0.0001, 1\]"),
        ({"lr": 0.1, "nope": 3}, "'nope', which is not in the search space"),
    ],
)
def test_bad_points_are_refused_at_the_first_suggest(point: dict[str, Any], match: str) -> None:
    search = make_search({"lr": tune.loguniform(LOW, HIGH)}, points_to_evaluate=[point])
    with pytest.raises(ValueError, match=match):
        search.suggest("t0")


def test_add_evaluated_point_warm_starts_a_new_search() -> None:
    """The results of an earlier search (15 trials, told with their gradients before the
    space is known; an errored and a pruned point besides) warm-start a new one: its first
    proposal is exactly the earlier search's next one, and it reaches η* to 1e-6 within 15
    more trials; the failed step sizes are never proposed."""
    earlier = make_search({"lr": tune.loguniform(LOW, HIGH)})
    configs = run(earlier, 15)
    earlier_next = earlier.suggest("next")
    assert earlier_next is not None
    warm = MetaGradientSearch(metric="loss", mode="min", meta_optimizer="bracket")
    for config in configs:
        result = quad_result(config["lr"])
        warm.add_evaluated_point(
            {"lr": config["lr"], "task_seed": 0}, result["loss"], gradient=result["loss_grad"]
        )
    warm.add_evaluated_point({"lr": 0.95}, None, error=True)
    warm.add_evaluated_point({"lr": 0.9}, None, pruned=True, intermediate_values=[5.0, 3.0])
    assert warm.set_search_properties(None, None, {"lr": tune.loguniform(LOW, HIGH)})
    assert warm.n_meta_steps == 17
    first = warm.suggest("w0")
    assert first is not None and first["lr"] == earlier_next["lr"]
    warm.on_trial_complete("w0", result=quad_result(first["lr"]))
    lrs = [c["lr"] for c in run(warm, 14, start=1)]
    assert relative_error(lrs[-1], ETA_STAR) < 1e-6
    assert 0.95 not in lrs and 0.9 not in lrs


def test_add_evaluated_point_checks_its_parameters() -> None:
    search = make_search({"lr": tune.loguniform(LOW, HIGH)})
    with pytest.raises(ValueError, match="parameters must be a mapping"):
        search.add_evaluated_point(0.1, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must give the step size 'lr'"):
        search.add_evaluated_point({"wd": 0.1}, 1.0)


def test_the_extension_points_are_ray_searcher_overrides() -> None:
    """Ray's base ``Searcher`` raises ``NotImplementedError`` for ``add_evaluated_point`` and
    ignores ``set_max_concurrency``; ours override both (Ray's ``add_evaluated_trials``
    checks for the override)."""
    assert MetaGradientSearch.add_evaluated_point is not Searcher.add_evaluated_point
    assert MetaGradientSearch.set_max_concurrency is not Searcher.set_max_concurrency
    assert HypergradientSearch.set_max_concurrency is not Searcher.set_max_concurrency
