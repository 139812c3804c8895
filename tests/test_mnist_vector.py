"""The MNIST task with a general inner optimizer: exact gradients in every hyperparameter.

``MNIST.sample(..., optimizer=...)`` trains each task with an update rule of
:mod:`l2l_tune.hypergrad.rules`; :meth:`MNISTBatch.value_and_gradients` carries one
tangent per named hyperparameter (forward mode). It is checked against reverse mode
through the unrolled run (to rounding), against central differences of
:meth:`MNISTBatch.meta_objective` (to 1e-5) and against ``torch.optim`` itself (the
plain run, to the last bit).

All checks run in float64 on scikit-learn's 8×8 digits with a 64-16-8-10 network.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from l2l_tune.hypergrad import mlp  # noqa: E402
from l2l_tune.hypergrad.rules import SGD, Adam, AdamW, Scheduled, UpdateRule  # noqa: E402
from l2l_tune.meta.base import NonFiniteMetaGradientWarning  # noqa: E402
from l2l_tune.meta.vector import HyperparameterSpace  # noqa: E402
from l2l_tune.tasks import MNIST, MNISTBatch  # noqa: E402
from l2l_tune.tasks.base import HyperparameterTask, MetaObjectiveTask  # noqa: E402
from l2l_tune.tasks.mnist import MNISTEvaluation  # noqa: E402

#: Inner steps of every gradient check (the schedules span exactly this horizon).
T = 30
#: Relative step of the central differences. The meta-objective of a ReLU network is
#: piecewise smooth: at a relative step of 1e-4 most names straddle a kink (errors of
#: order 1), at 1e-5 Nesterov's momentum still does (error 1e-4). At 1e-6 every case below
#: agrees with forward mode to ≤ 2e-7; what is left is rounding (it grows as 1/step:
#: ~1e-6 at 1e-7), which is why the values below are chosen so that every hyperparameter
#: visibly moves the meta-objective.
FD_STEP = 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread: None) -> None:
    """One PyTorch thread for the whole module."""


@pytest.fixture(scope="module")
def digits() -> MNIST:
    return MNIST("digits", dtype="float64", hidden=(16, 8))


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def _central_difference(
    batch: MNISTBatch,
    hyperparameters: Mapping[str, float],
    key: str,
    t: int,
    *,
    split: str,
    log: bool,
    rel: float = FD_STEP,
) -> float:
    """``∂F/∂h_key`` by the central difference at ``h(1 ± rel)`` (absolute ``rel`` at 0)."""
    x = hyperparameters[key]
    dx = rel * abs(x) if x else rel
    plus = batch.meta_objective({**hyperparameters, key: x + dx}, t, split=split, log=log)
    minus = batch.meta_objective({**hyperparameters, key: x - dx}, t, split=split, log=log)
    return (plus - minus) / (2 * dx)


# Every config names every hyperparameter its rule differentiates in, at values where
# each one visibly moves the meta-objective: a value that barely matters (weight_decay =
# 1e-3 with SGD, or 0.02 under the cosine schedule) leaves the central difference at
# relative step 1e-6 to rounding (errors 2.5e-5 and 9e-7 measured, shrinking as the step
# grows), which says nothing about forward mode.
_CONFIGS: dict[str, tuple[Callable[[], str | UpdateRule], dict[str, float]]] = {
    "sgd-weight-decay": (lambda: "sgd", {"lr": 0.2, "weight_decay": 0.05}),
    "momentum": (
        lambda: SGD(momentum_buffer=True),
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.02},
    ),
    "nesterov": (
        lambda: "nesterov",
        # dampening = 0 as torch.optim requires, still differentiable (absolute step).
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.0, "weight_decay": 0.02},
    ),
    "adam": (
        lambda: "adam",
        {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.02},
    ),
    "adamw": (
        lambda: AdamW(),
        {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.5},
    ),
    "scheduled-momentum-cosine": (
        lambda: Scheduled(SGD(momentum_buffer=True), horizon=T, decay="cosine"),
        {
            "lr": 0.2,
            "momentum": 0.9,
            "dampening": 0.5,
            "weight_decay": 0.05,
            # W = 10.5 steps: halfway between the kinks at integer W.
            "warmup_fraction": 0.35,
            "final_fraction": 0.1,
        },
    ),
}
# Reverse mode only: AMSGrad's running maximum adds kinks of its own to the ReLU ones.
_BACKPROP_ONLY: dict[str, tuple[Callable[[], str | UpdateRule], dict[str, float]]] = {
    "amsgrad": (
        lambda: Adam(amsgrad=True),
        {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.02},
    ),
    "scheduled-adamw-linear": (
        lambda: Scheduled(AdamW(), horizon=T, decay="linear"),
        {"lr": 0.01, "beta2": 0.99, "warmup_fraction": 0.2, "final_fraction": 0.3},
    ),
    "scheduled-sgd-exponential": (
        lambda: Scheduled(SGD(), horizon=T, decay="exponential"),
        {"lr": 0.3, "weight_decay": 0.01, "final_fraction": 0.05},
    ),
}
_SPLIT_LOG = [("train", False), ("valid", True)]


def _batch(digits: MNIST, optimizer: str | UpdateRule, m: int = 2, seed: int = 1) -> MNISTBatch:
    return digits.sample(m, 100, 50, label_noise=0.1, seed=seed, optimizer=optimizer)


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize(("split", "log"), _SPLIT_LOG)
@pytest.mark.parametrize("config", sorted(_CONFIGS))
def test_forward_matches_backprop_and_finite_differences(
    digits: MNIST, config: str, split: str, log: bool
) -> None:
    """float64: forward = reverse mode to 1e-10, = central differences (step 1e-6) to 1e-5,
    in every differentiable hyperparameter of the rule at once."""
    make, hyperparameters = _CONFIGS[config]
    batch = _batch(digits, make())
    value, forward = batch.value_and_gradients(hyperparameters, T, split=split, log=log)
    assert list(forward) == list(hyperparameters)
    assert value == pytest.approx(
        batch.meta_objective(hyperparameters, T, split=split, log=log), rel=1e-14
    )
    backprop = batch.backprop_gradients(hyperparameters, T, split=split, log=log)
    for key, grad in forward.items():
        assert math.isfinite(grad) and grad != 0.0, key
        assert _relative(grad, backprop[key]) <= 1e-10, (key, grad, backprop[key])
        fd = _central_difference(batch, hyperparameters, key, T, split=split, log=log)
        assert _relative(fd, grad) <= 1e-5, (key, grad, fd)


@pytest.mark.parametrize(("split", "log"), [("train", True), ("valid", False)])
@pytest.mark.parametrize("config", sorted(_BACKPROP_ONLY))
def test_forward_matches_backprop(digits: MNIST, config: str, split: str, log: bool) -> None:
    """AMSGrad and the other schedules: forward = reverse mode to 1e-10."""
    make, hyperparameters = _BACKPROP_ONLY[config]
    batch = _batch(digits, make())
    _, forward = batch.value_and_gradients(hyperparameters, T, split=split, log=log)
    backprop = batch.backprop_gradients(hyperparameters, T, split=split, log=log)
    assert list(forward) == list(hyperparameters)
    for key, grad in forward.items():
        assert math.isfinite(grad) and grad != 0.0, key
        assert _relative(grad, backprop[key]) <= 1e-10, (key, grad, backprop[key])


# ---------------------------------------------------------------------- per layer
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adamw"])
def test_per_layer_step_sizes_sum_to_the_shared_one(digits: MNIST, optimizer: str) -> None:
    """lr[0] = lr[1] = lr[2] = η is the shared η: same value, gradients summing to its own."""
    batch = _batch(digits, optimizer).with_optimizer(
        optimizer, {"momentum": 0.9} if optimizer == "momentum" else None
    )
    eta = 0.01 if optimizer == "adamw" else 0.1
    assert batch.n_layers == 3
    shared_value, shared = batch.value_and_gradients({"lr": eta}, T, split="valid")
    layered = {f"lr[{i}]": eta for i in range(batch.n_layers)}
    value, per_layer = batch.value_and_gradients(layered, T, split="valid")
    assert value == pytest.approx(shared_value, rel=1e-15)
    assert list(per_layer) == list(layered)
    assert all(g != 0.0 for g in per_layer.values())
    assert _relative(sum(per_layer.values()), shared["lr"]) <= 1e-10


@pytest.mark.parametrize(
    ("optimizer", "hyperparameters"),
    [
        ("sgd", {"lr[0]": 0.3, "lr[1]": 0.1, "lr[2]": 0.05, "weight_decay": 0.05}),
        ("momentum", {"lr[0]": 0.08, "lr[1]": 0.04, "lr[2]": 0.02, "momentum[1]": 0.5}),
        ("adamw", {"lr[0]": 0.02, "lr[1]": 0.01, "lr[2]": 0.005, "beta1[2]": 0.7}),
    ],
)
def test_per_layer_gradients_match_backprop_and_finite_differences(
    digits: MNIST, optimizer: str, hyperparameters: dict[str, float]
) -> None:
    """Different step sizes per layer, with a shared or per-layer name besides (momentum[1]
    overrides the fixed momentum 0.9 on layer 1 only)."""
    batch = _batch(digits, optimizer).with_optimizer(
        optimizer, {"momentum": 0.9} if optimizer == "momentum" else None
    )
    _, forward = batch.value_and_gradients(hyperparameters, T, split="valid", log=True)
    backprop = batch.backprop_gradients(hyperparameters, T, split="valid", log=True)
    assert list(forward) == list(hyperparameters)
    grads = [forward[f"lr[{i}]"] for i in range(batch.n_layers)]
    assert len({round(g, 12) for g in grads}) == len(grads)  # the layers really differ
    for key, grad in forward.items():
        assert _relative(grad, backprop[key]) <= 1e-10, (key, grad, backprop[key])
        fd = _central_difference(batch, hyperparameters, key, T, split="valid", log=True)
        assert _relative(fd, grad) <= 1e-5, (key, grad, fd)


# ---------------------------------------------------------------------- scalar API
@pytest.mark.parametrize(
    ("optimizer", "fixed", "eta"),
    [
        ("sgd", None, 0.2),
        ("momentum", {"momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3}, 0.05),
        ("adamw", {"beta1": 0.8, "weight_decay": 0.1}, 0.01),
    ],
)
def test_scalar_methods_are_the_lr_case(
    digits: MNIST, optimizer: str, fixed: dict[str, float] | None, eta: float
) -> None:
    """value_and_gradient(η) is value_and_gradients({"lr": η}) with the fixed values; the
    backprop meta-gradient agrees; meta_objective takes either form."""
    batch = digits.sample(2, 100, 50, seed=2, optimizer=optimizer, hyperparameters=fixed)
    for key, value in (fixed or {}).items():
        assert batch.hyperparameters[key] == value
    for split, log in _SPLIT_LOG:
        scalar = batch.value_and_gradient(eta, T, split=split, log=log)
        value, grads = batch.value_and_gradients({"lr": eta}, T, split=split, log=log)
        assert scalar == (value, grads["lr"])
        assert batch.meta_gradient(eta, T, split=split, log=log) == grads["lr"]
        backprop = batch.meta_gradient(eta, T, split=split, log=log, method="backprop")
        assert _relative(backprop, grads["lr"]) <= 1e-10
        assert batch.meta_objective(eta, T, split=split, log=log) == batch.meta_objective(
            {"lr": eta}, T, split=split, log=log
        )
        # Forward mode runs the same training (bitwise on CPU today; rounding allowed).
        assert value == pytest.approx(batch.meta_objective(eta, T, split=split, log=log), rel=1e-14)
    if fixed:
        # Naming a fixed hyperparameter at its fixed value changes nothing but the keys.
        both = batch.value_and_gradients({"lr": eta, **fixed}, T)
        assert both[0] == pytest.approx(batch.value_and_gradient(eta, T)[0], rel=1e-15)
        assert _relative(both[1]["lr"], batch.value_and_gradient(eta, T)[1]) <= 1e-12


# ---------------------------------------------------------------------- torch.optim
def _torch_optim_train_loss(batch: MNISTBatch, make: Callable[[list[Any]], Any], t: int) -> float:
    """The train-split loss after ``t`` steps of a ``torch.optim`` optimizer on the batch's
    initialisation and mini-batches (``m = 1``)."""
    params = [p.clone().requires_grad_(True) for p in batch._init]
    optimizer = make(params)
    order = batch._batch_order(t)
    for step in range(t):
        x, y = batch._minibatch(order, step)
        optimizer.zero_grad()
        mlp.loss(params, x, y).sum().backward()
        optimizer.step()
    rows, labels = batch._indices[:, : batch.n_train], batch._labels[:, : batch.n_train]
    with torch.no_grad():
        return float(mlp.loss(params, batch.distribution._train_x[rows], labels).mean())


@pytest.mark.parametrize(
    ("optimizer", "hyperparameters", "make"),
    [
        (
            "adamw",
            {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.5},
            lambda p: torch.optim.AdamW(
                p, lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.5, foreach=False
            ),
        ),
        (
            "adam",
            {"lr": 0.01, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "weight_decay": 0.02},
            lambda p: torch.optim.Adam(
                p, lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.02, foreach=False
            ),
        ),
        (
            Adam(amsgrad=True),
            {"lr": 0.01, "beta2": 0.95, "weight_decay": 0.02},
            lambda p: torch.optim.Adam(
                p, lr=0.01, betas=(0.9, 0.95), weight_decay=0.02, amsgrad=True, foreach=False
            ),
        ),
        (
            "momentum",
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.02},
            lambda p: torch.optim.SGD(
                p, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.02, foreach=False
            ),
        ),
        (
            "nesterov",
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.02},
            lambda p: torch.optim.SGD(
                p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.02, foreach=False
            ),
        ),
    ],
    ids=["adamw", "adam", "amsgrad", "momentum", "nesterov"],
)
def test_inner_run_equals_torch_optim(
    digits: MNIST,
    optimizer: str | UpdateRule,
    hyperparameters: dict[str, float],
    make: Callable[[list[Any]], Any],
) -> None:
    """The batch's Adam/AdamW/momentum-SGD run is torch.optim's (to 1e-12; in fact bitwise)."""
    batch = digits.sample(1, 100, 0, seed=3, optimizer=optimizer)
    reference = _torch_optim_train_loss(batch, make, T)
    assert _relative(batch.meta_objective(hyperparameters, T), reference) <= 1e-12
    # The forward-mode run does not change the primal run either.
    value, _ = batch.value_and_gradients(hyperparameters, T)
    assert _relative(value, reference) <= 1e-12


# ---------------------------------------------------------------------- divergence
@pytest.mark.parametrize(("split", "log"), [("train", False), ("valid", True)])
@pytest.mark.parametrize(
    ("optimizer", "hyperparameters"),
    [
        ("adam", {"lr": 1e3}),
        ("adam", {"lr": 1e3, "beta1": 0.9, "eps": 1e-8, "weight_decay": 0.01}),
        ("sgd", {"lr": 50.0}),
        ("sgd", {"lr": 50.0, "weight_decay": 0.01}),
        ("momentum", {"lr": 200.0, "momentum": 0.9, "dampening": 0.5}),
        ("nesterov", {"lr": 50.0, "momentum": 0.9}),
        ("adamw", {"lr": 1e3, "weight_decay": 0.5}),
    ],
)
def test_divergence_never_gives_nan(
    digits: MNIST, optimizer: str, hyperparameters: dict[str, float], split: str, log: bool
) -> None:
    """A diverging run: finite value (the 40·ln C bound when every task diverges), each
    gradient finite or +inf (with the warning), never NaN."""
    batch = _batch(digits, optimizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value, grads = batch.value_and_gradients(hyperparameters, T, split=split, log=log)
    assert math.isfinite(value)
    plain = batch.meta_objective(hyperparameters, T, split=split, log=log)
    assert value == pytest.approx(plain, rel=1e-14)
    truncated = batch.evaluate(hyperparameters, T).truncated
    assert truncated.any()  # the case really diverges
    if truncated.all():
        bound = batch.truncation_loss
        assert value == pytest.approx(math.log(bound) / T if log else bound, rel=1e-15)
    assert list(grads) == list(hyperparameters)
    for key, grad in grads.items():
        assert not math.isnan(grad), key
        assert math.isfinite(grad) or grad == math.inf, (key, grad)
    nonfinite = [w for w in caught if issubclass(w.category, NonFiniteMetaGradientWarning)]
    if any(g == math.inf for g in grads.values()):
        assert nonfinite
    assert not any(issubclass(w.category, RuntimeWarning) for w in caught if w not in nonfinite)


# ---------------------------------------------------------------------- space, protocol
def test_hyperparameter_space_names(digits: MNIST) -> None:
    adamw = _batch(digits, "adamw")
    assert isinstance(adamw, HyperparameterTask)
    assert isinstance(adamw, MetaObjectiveTask)
    space = adamw.hyperparameter_space()
    assert isinstance(space, HyperparameterSpace)
    names = set(space.names)
    layers = {f"lr[{i}]" for i in range(adamw.n_layers)}
    assert {"lr", "weight_decay", "beta1", "beta2", "eps"} | layers <= names
    assert f"lr[{adamw.n_layers}]" not in names
    assert "momentum" not in names
    # Every shared name of the space (at its default) is accepted and differentiated.
    shared = space.subset([n for n in space.names if "[" not in n])
    values = {p.name: p.default() for p in shared.parameters}
    value, grads = adamw.value_and_gradients(values, 5)
    assert math.isfinite(value) and all(math.isfinite(g) for g in grads.values())

    sgd_names = set(_batch(digits, "sgd").hyperparameter_space().names)
    assert "lr" in sgd_names and "weight_decay" in sgd_names
    assert "momentum" not in sgd_names and "dampening" not in sgd_names
    assert {"momentum", "dampening"} <= set(_batch(digits, "momentum").hyperparameter_space().names)
    scheduled = _batch(digits, Scheduled(AdamW(), horizon=T))
    assert {"warmup_fraction", "final_fraction", "beta1"} <= set(
        scheduled.hyperparameter_space().names
    )


def test_attributes(digits: MNIST) -> None:
    batch = digits.sample(2, 50, 0, seed=0, optimizer="momentum", hyperparameters={"momentum": 0.9})
    assert isinstance(batch.optimizer, SGD) and batch.optimizer.momentum_buffer
    assert batch.hyperparameters == {
        "lr": 1e-3,
        "momentum": 0.9,
        "dampening": 0.0,
        "weight_decay": 0.0,
    }
    assert batch.n_layers == len(digits.sizes) - 1 == 3
    assert isinstance(_batch(digits, "adamw").optimizer, AdamW)
    assert _batch(digits, "adamw").hyperparameters["weight_decay"] == 1e-2
    rule = Adam(amsgrad=True)
    assert _batch(digits, rule).optimizer is rule


# ---------------------------------------------------------------------- with_optimizer
def test_with_optimizer_keeps_the_tasks(digits: MNIST) -> None:
    """Same samples, initialisations and orders: switching the optimizer is sampling again
    with the same seed and the other optimizer."""
    adam = digits.sample(2, 100, 50, label_noise=0.1, seed=7, optimizer="adam")
    sgd = digits.sample(2, 100, 50, label_noise=0.1, seed=7, optimizer="sgd")
    switched = adam.with_optimizer("sgd")
    assert isinstance(switched.optimizer, SGD) and not switched.optimizer.momentum_buffer
    assert switched.hyperparameters == sgd.hyperparameters
    for split in ("train", "valid"):
        assert switched.meta_objective(0.1, T, split=split) == sgd.meta_objective(
            0.1, T, split=split
        )
    assert switched.meta_objective(0.1, T) != adam.meta_objective(0.1, T)
    assert isinstance(adam.optimizer, Adam)  # the original batch is unchanged

    fixed = {"momentum": 0.9, "weight_decay": 0.01}
    momentum = digits.sample(
        2, 100, 50, label_noise=0.1, seed=7, optimizer="momentum", hyperparameters=fixed
    )
    assert sgd.with_optimizer("momentum", fixed).value_and_gradients(
        {"lr": 0.05}, T
    ) == momentum.value_and_gradients({"lr": 0.05}, T)
    rule = Scheduled(AdamW(), horizon=T)
    assert adam.with_optimizer(rule).optimizer is rule


# ---------------------------------------------------------------------- evaluation
def test_evaluate_with_a_mapping(digits: MNIST) -> None:
    batch = _batch(digits, "adamw")
    hyperparameters = {"lr": 0.01, "weight_decay": 0.1}
    evaluation = batch.evaluate(hyperparameters, T)
    assert isinstance(evaluation, MNISTEvaluation)
    assert evaluation.hyperparameters == hyperparameters
    assert evaluation.eta == 0.01 and evaluation.t == T
    for accuracy in (evaluation.test_accuracy, evaluation.train_accuracy):
        assert accuracy.shape == (2,)
        assert np.all(np.isfinite(accuracy)) and np.all((accuracy >= 0) & (accuracy <= 1))
    assert not evaluation.truncated.any()
    assert float(np.mean(evaluation.train_loss)) == pytest.approx(
        batch.meta_objective(hyperparameters, T), rel=1e-12
    )
    # Without lr the fixed one is the evaluation's eta; a scalar leaves the mapping empty.
    assert batch.evaluate({"weight_decay": 0.1}, 2).eta == batch.hyperparameters["lr"]
    assert batch.evaluate(0.01, 2).hyperparameters == {}


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("optimizer", "hyperparameters", "match"),
    [
        ("adamw", {"foo": 0.1}, "'foo'"),
        ("adamw", {"lr[9]": 0.1}, r"'lr\[9\]'"),
        ("adamw", {"lr[-1]": 0.1}, r"'lr\[-1\]'"),
        ("adamw", {"lr": 0.1, "lr[0]": 0.1}, r"\['lr'\] both"),
        ("adamw", {"weight_decay": -1.0}, "weight_decay"),
        ("adamw", {"lr": -1.0}, "lr"),
        ("adamw", {"lr": math.nan}, "lr"),
        ("adamw", {"lr[1]": math.inf}, "lr"),
        ("adamw", {"beta1": 1.0}, "beta1"),
        ("adamw", {"lr": True}, "'lr'"),
        ("adamw", {"lr": "0.1"}, "'lr'"),
        ("adamw", {}, "hyperparameters must be a non-empty mapping"),
        ("adamw", 0.1, "hyperparameters must be a non-empty mapping"),
        ("adamw", [("lr", 0.1)], "hyperparameters must be a non-empty mapping"),
        ("sgd", {"lr": 0.1, "momentum": 0.9}, "momentum"),
        ("sgd", {"dampening[0]": 0.1}, "dampening"),
        ("sgd", {"beta1": 0.9}, "'beta1'"),
        (Scheduled(SGD(), horizon=T), {"warmup_fraction": 1.0}, "warmup_fraction"),
    ],
)
def test_value_and_gradients_rejects_bad_hyperparameters(
    digits: MNIST, optimizer: str | UpdateRule, hyperparameters: Any, match: str
) -> None:
    batch = digits.sample(1, 20, 10, seed=0, optimizer=optimizer)
    with pytest.raises(ValueError, match=match):
        batch.value_and_gradients(hyperparameters, 3)
    with pytest.raises(ValueError, match=match):
        batch.backprop_gradients(hyperparameters, 3)


@pytest.mark.parametrize(
    ("hyperparameters", "match"),
    [
        ({"foo": 0.1}, "'foo'"),
        ({"lr[3]": 0.1}, r"'lr\[3\]'"),
        ({"lr[0]": 0.1, "lr": 0.1}, r"\['lr'\] both"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"lr": -1.0}, "lr"),
        ({}, "hyperparameters must be a non-empty mapping"),
    ],
)
def test_plain_runs_reject_bad_hyperparameters(
    digits: MNIST, hyperparameters: Any, match: str
) -> None:
    batch = digits.sample(1, 20, 10, seed=0, optimizer="adamw")
    with pytest.raises(ValueError, match=match):
        batch.meta_objective(hyperparameters, 3)
    with pytest.raises(ValueError, match=match):
        batch.evaluate(hyperparameters, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"optimizer": None}, "optimizer"),
        ({"optimizer": torch.optim.SGD}, "optimizer"),
        ({"hyperparameters": {"foo": 1.0}}, "'foo'"),
        ({"optimizer": "sgd", "hyperparameters": {"beta1": 0.9}}, "'beta1'"),
        ({"optimizer": "adam", "hyperparameters": {"lr": -1.0}}, "lr"),
        ({"optimizer": "adam", "hyperparameters": {"beta2": 1.5}}, "beta2"),
        ({"optimizer": "momentum", "hyperparameters": {"weight_decay": -0.1}}, "weight_decay"),
        ({"hyperparameters": 0.1}, "hyperparameters"),
    ],
)
def test_sample_and_with_optimizer_reject_bad_optimizers(
    digits: MNIST, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        digits.sample(1, 20, 10, seed=0, **kwargs)
    batch = digits.sample(1, 20, 10, seed=0)
    with pytest.raises(ValueError, match=match):
        batch.with_optimizer(kwargs.get("optimizer", "sgd"), kwargs.get("hyperparameters"))


@pytest.mark.parametrize(
    ("optimizer", "hyperparameters", "call", "match"),
    [
        # momentum on SGD without a buffer would be silently ignored (torch.optim keeps one)
        ("sgd", {"momentum": 0.9}, None, "momentum_buffer=True"),
        ("sgd", {}, {"lr": 0.1, "momentum": 0.9}, "optimizer='momentum'"),
        ("nesterov", {"momentum": 0.0}, None, "Nesterov momentum"),
    ],
)
def test_momentum_is_never_silently_ignored(
    digits: MNIST,
    optimizer: str,
    hyperparameters: dict[str, float],
    call: dict[str, float] | None,
    match: str,
) -> None:
    with pytest.raises(ValueError, match=match):
        batch = digits.sample(
            2, 100, 50, seed=1, optimizer=optimizer, hyperparameters=hyperparameters
        )
        batch.meta_objective(call or 0.1, T)


def test_named_momentum_presets_use_momentum_09(digits: MNIST) -> None:
    batch = digits.sample(2, 100, 50, seed=1, optimizer="nesterov")
    assert batch.hyperparameters["momentum"] == 0.9
    plain = digits.sample(2, 100, 50, seed=1, optimizer="sgd")
    assert batch.meta_objective(0.1, T) != plain.meta_objective(0.1, T)


# ---------------------------------------------------------------------- command line
def test_cli_tunes_per_layer_step_sizes_of_momentum_sgd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``l2l-tune tune --optimizer momentum --tune lr[0],lr[1],lr[2]``: the JSON holds the
    three tuned step sizes, a finite meta-objective and test accuracy, and the history."""
    from l2l_tune.cli import main

    out = tmp_path / "r.json"
    argv = [
        "tune", "--task", "mnist", "--dataset", "digits", "--t", "30", "--m", "1",
        "--m-test", "1", "--n-train", "100", "--n-valid", "100", "--split", "valid",
        "--optimizer", "momentum", "--tune", "lr[0],lr[1],lr[2]",
        "--start", "lr[0]=0.01,lr[1]=0.01,lr[2]=0.01", "--max-evals", "3",
        "--no-progress", "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["hyperparameters"]) == {"lr[0]", "lr[1]", "lr[2]"}
    assert result["optimizer"] == "momentum" and result["n_evals"] == 3
    assert math.isfinite(result["meta_objective"]) and 0 <= result["test_accuracy"] <= 1
    first = result["history"][0]["values"]
    assert first == pytest.approx({"lr[0]": 0.01, "lr[1]": 0.01, "lr[2]": 0.01}, rel=1e-12)
    assert "lr[0]=" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--tune", "lr,lr"], "--tune"),
        (["--tune", "lr,weight_decay", "--start", "lr=abc,weight_decay=0.1"], "--start"),
        (["--tune", "lr,weight_decay", "--start", "lr=0.1"], "--start"),
        (["--tune", "lr,nope"], "nope"),
        (["--tune", "lr,weight_decay", "--meta-optimizer", "bracket"], "--meta-optimizer"),
        (["--tune", "lr,weight_decay", "--plot", "p.png"], "--plot"),
        (["--optimizer", "rmsprop"], "--optimizer"),
        # --start, --eta0 and --tol are never silently ignored
        (["--start", "garbage"], "--start"),
        (["--start", "lr=0.1", "--eta0", "0.1"], "--eta0"),
        (["--tune", "lr,weight_decay", "--eta0", "0.1"], "--eta0"),
        (["--tune", "lr,weight_decay", "--tol", "0.1"], "--tol"),
    ],
)
def test_cli_rejects_bad_vector_arguments(
    extra: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from l2l_tune.cli import main

    argv = ["tune", "--task", "mnist", "--dataset", "digits", "--t", "5", "--m", "1",
            "--n-train", "50", "--n-valid", "50", "--max-evals", "1", "--no-progress",
            "--optimizer", "adamw", *extra]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_evaluate_reports_the_validation_loss_of_the_same_run(digits: MNIST) -> None:
    batch = digits.sample(2, 100, 50, seed=3, optimizer="adamw")
    values = {"lr": 3e-3, "weight_decay": 0.05}
    evaluation = batch.evaluate(values, T)
    expected = batch.meta_objective(values, T, split="valid")
    assert float(np.mean(evaluation.valid_loss)) == pytest.approx(expected, rel=1e-12)
    summary = evaluation.summary()
    assert 0.0 <= summary["valid_accuracy"] <= 1.0 and "valid_loss" in summary
    without = digits.sample(2, 100, 0, seed=3).evaluate(0.1, T)
    assert without.valid_loss.size == 0 and "valid_loss" not in without.summary()


def test_nesterov_momentum_search_range_stays_positive(digits: MNIST) -> None:
    """Nesterov refuses momentum 0 (as torch.optim.SGD): its search range starts above 0,
    so a tuner clipping to the bound never proposes a refused value."""
    from l2l_tune import HyperparameterTuner

    batch = digits.sample(2, 60, 0, seed=0, optimizer="nesterov")
    space = batch.hyperparameter_space().subset(["momentum"])
    assert space.parameters[0].low > 0
    tuner = HyperparameterTuner(
        ["lr", "momentum"], start={"lr": 0.5, "momentum": 0.05}, max_evals=4
    ).fit(batch, 10)
    assert all(r.values["momentum"] > 0 for r in tuner.history_)


def test_scheduled_sgd_keeps_the_momentum_checks(digits: MNIST) -> None:
    with pytest.raises(ValueError, match="momentum_buffer=True"):
        digits.sample(
            2, 60, 0, optimizer=Scheduled(SGD(), horizon=5), hyperparameters={"momentum": 0.9}
        )
    with pytest.raises(ValueError, match="Nesterov momentum"):
        digits.sample(2, 60, 0, optimizer=Scheduled(SGD(nesterov=True), horizon=5))


@pytest.mark.parametrize(
    ("values", "match"),
    [({"lr[00]": 0.1}, "lr\\[00\\]"), ({"lr[0]": 0.1, "lr[1]": 0.1, "lr[01]": 0.2}, "lr\\[01\\]")],
)
def test_layer_keys_are_canonical(digits: MNIST, values: dict[str, float], match: str) -> None:
    batch = digits.sample(2, 60, 0, seed=0)
    with pytest.raises(ValueError, match=match):
        batch.value_and_gradients(values, 5)


def test_cli_start_sets_the_first_step_size_of_the_step_size_search(tmp_path: Path) -> None:
    from l2l_tune.cli import main

    out = tmp_path / "r.json"
    argv = ["tune", "--task", "mnist", "--dataset", "digits", "--t", "10", "--m", "1",
            "--m-test", "1", "--n-train", "50", "--n-valid", "50", "--split", "valid",
            "--start", "lr=0.0123", "--max-evals", "2", "--no-progress",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["history"][0]["eta"] == pytest.approx(0.0123)
