"""``HypergradientSearch``: several float hyperparameters of a Ray Tune run, tuned by gradients.

Driven directly through Ray's searcher interface (``suggest``/``on_trial_complete``, as the
Tuner calls it; no Ray process); ``tests/test_ray_tune.py`` runs it under a real Tuner.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from l2l_tune.integrations.ray import HypergradientSearch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.utils import flatten_dict  # noqa: E402

OPTIMUM = {"lr": 0.03, "weight_decay": 1e-3}


def space() -> dict[str, Any]:
    return {
        "lr": tune.loguniform(1e-5, 1.0),
        "weight_decay": tune.loguniform(1e-6, 1e-1),
        "activation": tune.choice(["relu", "tanh"]),
        "layers": 3,
    }


def bowl_result(config: dict[str, Any]) -> dict[str, Any]:
    """What a trainable with ``HypergradAdamW`` reports, flattened as Ray does."""
    a = math.log(config["lr"] / OPTIMUM["lr"])
    b = math.log(config["weight_decay"] / OPTIMUM["weight_decay"])
    grads = {"lr": 2 * a / config["lr"], "weight_decay": b / config["weight_decay"]}
    return flatten_dict({"loss": 1.0 + a * a + 0.5 * b * b, "loss_grad": grads})


def make_search(**kwargs: Any) -> HypergradientSearch:
    search = HypergradientSearch(("lr", "weight_decay"), metric="loss", mode="min", **kwargs)
    assert search.set_search_properties(None, None, space())
    return search


def run(search: HypergradientSearch, n: int, result_fn: Any = bowl_result) -> list[dict[str, Any]]:
    configs = []
    for i in range(n):
        config = search.suggest(f"t{i}")
        assert config is not None
        configs.append(config)
        search.on_trial_complete(f"t{i}", result=result_fn(config))
    return configs


def test_two_hyperparameters_reach_the_optimum() -> None:
    search = make_search(seed=0)
    configs = run(search, 60)
    got = search.meta_optimizer_state().estimate()
    for name in ("lr", "weight_decay"):
        assert abs(math.log(got[name] / OPTIMUM[name])) <= 0.1, got
    assert {c["activation"] for c in configs} == {"relu", "tanh"}
    assert all(c["layers"] == 3 for c in configs)


def test_save_and_restore_continue_exactly(tmp_path: Path) -> None:
    first = make_search(seed=1)
    run(first, 8)
    path = str(tmp_path / "searcher.pkl")
    first.save(path)
    restored = make_search(seed=99)
    restored.restore(path)
    assert restored.suggest("next") == first.suggest("next")
    with open(path, "rb") as handle:
        assert len(pickle.load(handle)["records"]) == 8


@pytest.mark.parametrize(("meta_optimizer", "shrink"), [("adam", math.exp(-0.5)), ("model", 1 / 3)])
def test_errors_and_missing_gradients(meta_optimizer: str, shrink: float) -> None:
    """An errored trial is a diverged run (the start's step size and decay shrink: by
    e^0.5 for Adam, by 3 for the model); a result without a derivative for every tuned
    key is value-only (Adam's point does not move, the model's design moves on);
    maximise flips the sign."""
    search = make_search(start={"lr": 0.5, "weight_decay": 1e-3}, meta_optimizer=meta_optimizer)
    config = search.suggest("a")
    assert config is not None
    search.on_trial_complete("a", error=True)
    shrunk = search.suggest("b")
    assert shrunk is not None and shrunk["lr"] == pytest.approx(0.5 * shrink)
    assert shrunk["weight_decay"] == pytest.approx(1e-3 * shrink)
    search.on_trial_complete("b", result={"loss": 2.0, "loss_grad/lr": 1.0})
    assert (search.suggest("c")["lr"] == shrunk["lr"]) == (meta_optimizer == "adam")
    assert search.meta_optimizer_state().history[-1].gradients is None

    def maximised(config: dict[str, Any]) -> dict[str, Any]:
        result = bowl_result(config)
        return {k: -v for k, v in result.items()}

    up = HypergradientSearch(("lr", "weight_decay"), metric="loss", mode="max", seed=0)
    assert up.set_search_properties(None, None, space())
    run(up, 60, maximised)
    got = up.meta_optimizer_state().estimate()
    assert abs(math.log(got["lr"] / OPTIMUM["lr"])) <= 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"params": ()}, "params"),
        ({"params": ("lr", "lr")}, "params"),
        ({"params": ("lr",), "meta_optimizer": "sgd"}, "meta_optimizer"),
        ({"params": ("lr",), "mode": "up"}, "mode"),
        ({"params": ("lr", "wd"), "start": {"lr": 0.1, "momentum": 0.9}}, "start"),
        ({"params": ("lr",), "start": {"lr": "fast"}}, r"start\['lr'\]"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HypergradientSearch(**kwargs)


def test_a_tuned_key_that_is_not_a_float_domain_raises() -> None:
    search = HypergradientSearch(("lr", "activation"), metric="loss", mode="min")
    assert search.set_search_properties(None, None, space())
    with pytest.raises(ValueError, match="'activation' must be a tune.uniform"):
        search.suggest("a")


@pytest.mark.parametrize(
    ("params", "match"), [((), "params"), (("lr", "lr"), "distinct"), (("lr", ""), "params")]
)
def test_task_trainable_rejects_bad_names(params: tuple[str, ...], match: str) -> None:
    from l2l_tune.integrations.ray import task_trainable

    from l2l_tune.tasks import Quadratic

    with pytest.raises(ValueError, match=match):
        task_trainable(Quadratic.random(5, seed=0), 10, params=params)


def test_task_trainable_reports_the_gradient_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a Tune session: the trainable reads every name and reports their gradients."""
    from l2l_tune.integrations.ray import _searcher, task_trainable

    from l2l_tune.tasks import Quadratic

    q = Quadratic.random(5, seed=0)
    reported: list[dict[str, Any]] = []
    monkeypatch.setattr(_searcher.tune, "report", reported.append)
    monkeypatch.setattr("ray.get_gpu_ids", lambda: [])
    config = {"lr": 0.5 / q.smoothness, "momentum": 0.3}
    task_trainable(q, 20, params=("lr", "momentum"))(config)
    (result,) = reported
    value, grads = q.value_and_gradients(config, 20)
    assert result["loss"] == value and result["loss_grad"] == grads
