"""The MLP optimizer of Metz et al. (paper Section 5): its state, features and step, checked
against the issue's specification written out by hand, and its torch.optim wrapper."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from l2l_tune.learned import (  # noqa: E402
    MetaParameters,
    MLPOptimizer,
    features,
    init_state,
    learned_step,
    update_moments,
)

BETAS = (0.5, 0.9, 0.99, 0.999, 0.9999)
TAUS = (3, 10, 30, 100, 300, 1000, 3000, 10000, 300000)


def reference_step(
    meta: MetaParameters, theta: list[float], grads: list[list[float]]
) -> tuple[list[float], list[list[float]]]:
    """Element by element, in plain Python floats, the issue's description of the optimizer:
    moments updated before the features, 22 value columns normalised over the tensor, 9 time
    features, 31 → 32 (ReLU) → 2, θ ← θ − 0.001·d·exp(0.001·mag). Returns the iterates and
    the features of the last step."""
    w1, b1 = meta.w1.double().tolist(), meta.b1.double().tolist()
    w2, b2 = meta.w2.double().tolist(), meta.b2.double().tolist()
    n = len(theta)
    m = [[0.0] * n for _ in BETAS]
    r = [[0.0] * n for _ in BETAS]
    last: list[list[float]] = []
    for k, g in enumerate(grads, start=1):
        for i, beta in enumerate(BETAS):
            for j in range(n):
                m[i][j] = beta * m[i][j] + (1 - beta) * g[j]
                r[i][j] = beta * r[i][j] + (1 - beta) * g[j] ** 2
        rs = [[1 / math.sqrt(r[i][j] + 1e-6) for j in range(n)] for i in range(5)]
        columns = (
            [g]
            + [[m[i][j] * rs[i][j] for j in range(n)] for i in range(5)]
            + [list(theta)]
            + [list(m[i]) for i in range(5)]
            + [list(r[i]) for i in range(5)]
            + rs
        )
        normed = []
        for column in columns:
            scale = 1 / math.sqrt(1e-5 + sum(x * x for x in column) / n)
            normed.append([x * scale for x in column])
        time = [math.tanh(k / tau - 1) for tau in TAUS]
        last = [[normed[c][j] for c in range(22)] + time for j in range(n)]
        new = []
        for j in range(n):
            x = last[j]
            hidden = [max(0.0, sum(x[a] * w1[a][h] for a in range(31)) + b1[h]) for h in range(32)]
            d = sum(hidden[h] * w2[h][0] for h in range(32)) + b2[0]
            mag = sum(hidden[h] * w2[h][1] for h in range(32)) + b2[1]
            new.append(theta[j] - 0.001 * d * math.exp(0.001 * mag))
        theta = new
    return theta, last


def meta64(seed: int = 0) -> MetaParameters:
    return MetaParameters.initial(torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_step_matches_the_specification_element_by_element() -> None:
    """Three steps on a 4-element tensor: iterates and last features equal the hand-written
    reference to 1e-12 (float64)."""
    meta = meta64()
    theta0 = [0.3, -1.2, 0.05, 2.0]
    grads = [[0.1, -0.4, 2.0, 0.0], [0.3, 0.2, -1.0, 0.5], [-0.2, 0.1, 0.7, -0.3]]
    expected, expected_features = reference_step(meta, theta0, grads)
    param = torch.tensor(theta0, dtype=torch.float64)
    state = init_state(param)
    for g in grads:
        grad = torch.tensor(g, dtype=torch.float64)
        x = features(param, grad, update_moments(grad, state))
        param, state = learned_step(meta, param, grad, state)
    assert state.step == 3
    assert torch.allclose(param, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert x.shape == (4, 31)
    assert torch.allclose(x, torch.tensor(expected_features, dtype=torch.float64), atol=1e-12)


def test_initialisation_and_shapes() -> None:
    """Weights N(0, 1) (sample moments over 1,056 entries), biases 0.1; features (…, 31)."""
    meta = MetaParameters.initial(torch.Generator().manual_seed(1))
    weights = torch.cat([meta.w1.flatten(), meta.w2.flatten()])
    assert abs(float(weights.mean())) < 0.1 and abs(float(weights.std()) - 1.0) < 0.1
    assert torch.all(meta.b1 == 0.1) and torch.all(meta.b2 == 0.1)
    param = torch.randn(3, 5)
    grad = torch.randn(3, 5)
    assert features(param, grad, update_moments(grad, init_state(param))).shape == (3, 5, 31)


def test_batch_dims_normalise_each_problem_on_its_own() -> None:
    """Two problems stacked on a leading dimension give the features of each alone."""
    meta = meta64(2)
    a, b = torch.randn(6, dtype=torch.float64), 10 * torch.randn(6, dtype=torch.float64)
    ga, gb = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    stacked, _ = learned_step(
        meta, torch.stack([a, b]), torch.stack([ga, gb]), init_state(torch.stack([a, b])),
        batch_dims=1,
    )  # fmt: skip
    alone_a, _ = learned_step(meta, a, ga, init_state(a))
    alone_b, _ = learned_step(meta, b, gb, init_state(b))
    assert torch.allclose(stacked, torch.stack([alone_a, alone_b]), atol=1e-14)


def test_step_is_differentiable_in_the_meta_parameters() -> None:
    """d(loss after two steps)/d w1 agrees with a central difference (float64) to 1e-5
    relative (the difference's rounding is ~3e-6 of these entries at a step of 1e-6)."""
    meta = meta64(3).requires_grad_()
    target = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def loss_after(m: MetaParameters) -> Any:
        param = torch.zeros(3, dtype=torch.float64)
        state = init_state(param)
        for _ in range(2):
            grad = param - target  # gradient of ½‖θ − target‖²
            param, state = learned_step(m, param, grad, state)
        return 0.5 * ((param - target) ** 2).sum()

    (grad_w1,) = torch.autograd.grad(loss_after(meta), meta.w1)
    eps = 1e-5
    for index in [(0, 0), (3, 7), (30, 31)]:
        shifted = []
        for sign in (1.0, -1.0):
            w1 = meta.w1.detach().clone()
            w1[index] += sign * eps
            rest = (t.detach() for t in (meta.b1, meta.w2, meta.b2))
            shifted.append(float(loss_after(MetaParameters(w1, *rest))))
        fd = (shifted[0] - shifted[1]) / (2 * eps)
        assert float(grad_w1[index]) == pytest.approx(fd, rel=1e-5, abs=1e-12)


def test_torch_optimizer_equals_the_functional_step(tmp_path: Path) -> None:
    """MLPOptimizer on a small network takes the functional step for every tensor, keeps
    the state across steps, and loads saved meta-parameters."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    meta = meta64(4)
    path = tmp_path / "meta.pt"
    meta.save(path)
    opt = MLPOptimizer(model.parameters(), path)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    params = [p.detach().clone() for p in model.parameters()]
    states = [init_state(p) for p in params]
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.step()
        for i, g in enumerate(grads):
            params[i], states[i] = learned_step(meta, params[i], g, states[i])
    for p, expected in zip(model.parameters(), params, strict=True):
        assert torch.allclose(p.detach(), expected, atol=1e-14)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: MetaParameters(
                torch.zeros(30, 32), torch.zeros(32), torch.zeros(32, 2), torch.zeros(2)
            ),
            "w1",
        ),  # fmt: skip
        (
            lambda: MetaParameters(
                torch.zeros(31, 32),
                torch.zeros(32),
                torch.zeros(32, 2),
                torch.zeros(2, dtype=torch.int64),
            ),
            "b2",
        ),  # fmt: skip
        (lambda: MetaParameters.from_state_dict({"w1": torch.zeros(31, 32)}), "missing"),
        (lambda: MLPOptimizer([torch.zeros(2, requires_grad=True)], 3.0), "meta_parameters"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_raises_value_error(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


# ---------------------------------------------------------------------- truncated backprop
def _problem(
    seed: int = 0, steps: int = 5
) -> tuple[list[Any], list[tuple[Any, Any]], tuple[Any, Any]]:
    """Two stacked 6-5-3 perceptrons, ``steps`` batches of 4 and a meta-set of 8 (float64)."""
    from l2l_tune.hypergrad import mlp

    gen = torch.Generator().manual_seed(seed)
    params = mlp.init_params((6, 5, 3), 2, gen, dtype=torch.float64)
    batches = [
        (torch.randn(2, 4, 6, generator=gen, dtype=torch.float64),
         torch.randint(0, 3, (2, 4), generator=gen))
        for _ in range(steps)
    ]  # fmt: skip
    meta_set = (
        torch.randn(2, 8, 6, generator=gen, dtype=torch.float64),
        torch.randint(0, 3, (2, 8), generator=gen),
    )
    return params, batches, meta_set


def _shifted(meta: MetaParameters, name: str, index: tuple[int, ...], by: float) -> MetaParameters:
    tensors = {n: getattr(meta, n).detach().clone() for n in ("w1", "b1", "w2", "b2")}
    tensors[name][index] += by
    return MetaParameters(**tensors)


@pytest.mark.parametrize(("name", "index"), [("w1", (0, 3)), ("w1", (12, 20)), ("b2", (0,)),
                                             ("w2", (5, 1))])  # fmt: skip
def test_second_order_meta_gradient_matches_central_differences(
    name: str, index: tuple[int, ...]
) -> None:
    """The second-order truncation meta-gradient is the derivative of the truncation's
    meta-objective: central differences agree to 1e-5 relative (float64, 5 steps)."""
    from l2l_tune.learned import init_states, run_truncation

    params, batches, meta_set = _problem()
    meta = meta64(5).requires_grad_()
    states = init_states(params)
    result = run_truncation(meta, params, states, batches, meta_set, order="second")
    (grad,) = torch.autograd.grad(result.meta_loss, getattr(meta, name))
    eps = 1e-5
    values = [
        float(run_truncation(_shifted(meta, name, index, s * eps), params, states, batches,
                             meta_set, order="second").meta_loss.detach())
        for s in (1.0, -1.0)
    ]  # fmt: skip
    fd = (values[0] - values[1]) / (2 * eps)
    assert result.finite
    assert float(grad[index]) == pytest.approx(fd, rel=1e-5, abs=1e-13)


def test_first_order_meta_gradient_is_the_derivative_with_frozen_inner_gradients() -> None:
    """First order (the paper's): the derivative of the same unroll in which every inner
    gradient is replaced by the constant the unperturbed run computed: checked by central
    differences of that frozen-gradient unroll, written out here step by step."""
    from l2l_tune.hypergrad import mlp
    from l2l_tune.learned import init_states, run_truncation

    params, batches, meta_set = _problem(1)
    meta = meta64(6).requires_grad_()
    states = init_states(params)
    result = run_truncation(meta, params, states, batches, meta_set, order="first")
    (grad,) = torch.autograd.grad(result.meta_loss, meta.w1)
    # the inner gradients of the unperturbed run
    frozen = []
    current, current_states = [p.clone() for p in params], list(states)
    with torch.no_grad():
        for x, y in batches:
            _, g = mlp.loss_and_gradient(current, x, y)
            frozen.append(g)
            stepped = [learned_step(meta, p, gi, s, batch_dims=1)
                       for p, gi, s in zip(current, g, current_states, strict=True)]  # fmt: skip
            current, current_states = [p for p, _ in stepped], [s for _, s in stepped]

    def frozen_objective(m: MetaParameters) -> float:
        current, current_states = [p.clone() for p in params], list(states)
        terms = []
        with torch.no_grad():
            for g in frozen:
                terms.append(float(mlp.loss(current, *meta_set).mean()))
                stepped = [
                    learned_step(m, p, gi, s, batch_dims=1)
                    for p, gi, s in zip(current, g, current_states, strict=True)
                ]
                current, current_states = [p for p, _ in stepped], [s for _, s in stepped]
        return sum(terms) / len(terms)

    eps = 1e-5
    for index in [(0, 3), (12, 20), (30, 31)]:
        fd = (frozen_objective(_shifted(meta, "w1", index, eps))
              - frozen_objective(_shifted(meta, "w1", index, -eps))) / (2 * eps)  # fmt: skip
        assert float(grad[index]) == pytest.approx(fd, rel=1e-5, abs=1e-13)
    # and it differs from the full derivative (the Hessian term is not negligible here)
    second = run_truncation(meta, params, states, batches, meta_set, order="second")
    (full,) = torch.autograd.grad(second.meta_loss, meta.w1)
    assert not torch.allclose(full, grad, rtol=1e-3)


def test_truncation_carries_state_and_stops_when_non_finite() -> None:
    """Two truncations of 3 steps equal one of 6 in their end point; a run that overflows
    stops and reports it."""
    from l2l_tune.learned import init_states, run_truncation

    params, batches, meta_set = _problem(2, steps=6)
    meta = meta64(7)
    states = init_states(params)
    whole = run_truncation(meta, params, states, batches, meta_set)
    first = run_truncation(meta, params, states, batches[:3], meta_set)
    second = run_truncation(meta, first.params, first.states, batches[3:], meta_set)
    assert second.states[0].step == 6
    for a, b in zip(whole.params, second.params, strict=True):
        assert torch.allclose(a, b, atol=1e-14)
    huge = MetaParameters(meta.w1, meta.b1, meta.w2, torch.tensor([1e6, 1e6], dtype=torch.float64))
    blown = run_truncation(huge, params, states, batches, meta_set)
    assert not blown.finite
    assert torch.isfinite(blown.meta_loss)
    with pytest.raises(ValueError, match="order"):
        run_truncation(meta, params, states, batches, meta_set, order="third")
    with pytest.raises(ValueError, match="batches"):
        run_truncation(meta, params, states, [], meta_set)


# ---------------------------------------------------------------------- meta-training
def test_meta_training_learns_to_descend_on_every_seed(one_torch_thread: None) -> None:
    """Train-by-validation on digits (4 problems at once, 2 trajectories × 4 truncations of
    20 steps): on each of three seeds the meta-objective of new problems (200 steps from the
    paper's initialisation) falls below 0.8× its value with the initial meta-parameters and
    below chance (ln 10)."""
    from l2l_tune.hypergrad import mlp
    from l2l_tune.learned import (
        MetaTrainingSchedule,
        init_states,
        meta_train,
        run_truncation,
    )
    from l2l_tune.tasks import MNIST

    digits = MNIST("digits")
    schedule = MetaTrainingSchedule(
        split="valid", n_train=500, n_valid=500, problems=4, trajectories=2,
        min_truncations=4, mean_extra_truncations=0, min_steps=20, mean_extra_steps=0,
    )  # fmt: skip

    def meta_objective(meta: MetaParameters, seed: int) -> float:
        batch = digits.sample(4, 500, 500, seed=1000 + seed)
        params = mlp.init_params(digits.sizes, 4, torch.Generator().manual_seed(seed),
                                 scheme="paper")  # fmt: skip
        with torch.no_grad():
            result = run_truncation(meta, params, init_states(params), batch.minibatches(0, 200),
                                    batch.split_data("valid"))  # fmt: skip
        return float(result.meta_loss)

    for seed in range(3):
        start = MetaParameters.initial(torch.Generator().manual_seed(seed))
        trained, records = meta_train(digits, schedule, seed=seed, meta=start)
        assert len(records) == 8 and all(r.steps == 20 for r in records)
        before, after = meta_objective(start, seed), meta_objective(trained, seed)
        assert after < 0.8 * before and after < math.log(10), (seed, before, after)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "test"}, "split"),
        ({"order": "zeroth"}, "order"),
        ({"problems": 0}, "problems"),
        ({"mean_extra_steps": -1.0}, "mean_extra_steps"),
        ({"lr": 0.0}, "lr"),
        ({"decay": 1.0}, "decay"),
        ({"label_noise": 1.5}, "label_noise"),
        ({"split": "valid", "n_valid": 0}, "n_valid"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"init": "he"}, "^init must be one of 'authors', 'fan-in'"),
    ],
)
def test_schedule_bad_input(kwargs: dict[str, Any], match: str) -> None:
    from l2l_tune.learned import MetaTrainingSchedule

    with pytest.raises(ValueError, match=match):
        MetaTrainingSchedule(**kwargs)


def test_minibatches_and_split_data_follow_the_batch() -> None:
    """The task's minibatches are its own run order; split_data is the full subset."""
    from l2l_tune.tasks import MNIST

    batch = MNIST("digits").sample(2, 100, 50, seed=0)
    first = batch.minibatches(0, 3)
    again = batch.minibatches(2, 4)
    assert len(first) == 3 and first[0][0].shape == (2, batch.distribution.batch_size, 64)
    assert torch.equal(first[2][0], again[0][0]) and torch.equal(first[2][1], again[0][1])
    x, y = batch.split_data("valid")
    assert x.shape == (2, 50, 64) and y.shape == (2, 50)
    with pytest.raises(ValueError, match="stop"):
        batch.minibatches(3, 3)


def test_meta_parameter_initialisations() -> None:
    """ "authors": weights N(0, 1) and biases 0.1; "fan-in": the same normal numbers over
    √fan_in and biases 0; meta_train starts from the schedule's init; a bad init is named."""
    from l2l_tune.learned import (
        HIDDEN,
        N_FEATURES,
        MetaParameters,
        MetaTrainingSchedule,
        meta_train,
    )
    from l2l_tune.tasks import MNIST

    authors = MetaParameters.initial(torch.Generator().manual_seed(5))
    fan_in = MetaParameters.initial(torch.Generator().manual_seed(5), init="fan-in")
    torch.testing.assert_close(fan_in.w1, authors.w1 / math.sqrt(N_FEATURES))
    torch.testing.assert_close(fan_in.w2, authors.w2 / math.sqrt(HIDDEN))
    assert torch.all(authors.b1 == 0.1) and torch.all(authors.b2 == 0.1)
    assert torch.all(fan_in.b1 == 0.0) and torch.all(fan_in.b2 == 0.0)
    assert 0.9 < float(authors.w1.std()) < 1.1
    with pytest.raises(ValueError, match="^init must be one of 'authors', 'fan-in'; got 'xavier'"):
        MetaParameters.initial(init="xavier")
    schedule = MetaTrainingSchedule(
        n_train=60, n_valid=40, problems=1, trajectories=1, min_truncations=1,
        mean_extra_truncations=0.0, min_steps=2, mean_extra_steps=0.0, lr=1e-12,
    )  # fmt: skip
    digits = MNIST("digits", hidden=(8,))
    for init, start in (("authors", authors), ("fan-in", fan_in)):
        meta, _ = meta_train(digits, replace(schedule, init=init), seed=5)
        torch.testing.assert_close(meta.w1, start.w1, atol=1e-6, rtol=0)


def test_meta_learning_rate_schedules() -> None:
    """Constant is the paper's lr; cosine falls from lr through lr/2 at mid-run towards 0."""
    from l2l_tune.learned import MetaTrainingSchedule, meta_learning_rate

    constant = MetaTrainingSchedule(lr=0.02)
    cosine = MetaTrainingSchedule(lr=0.02, lr_schedule="cosine")
    assert [meta_learning_rate(constant, p) for p in (0.0, 0.5, 0.99)] == [0.02] * 3
    assert meta_learning_rate(cosine, 0.0) == pytest.approx(0.02)
    assert meta_learning_rate(cosine, 0.5) == pytest.approx(0.01)
    assert meta_learning_rate(cosine, 0.99) == pytest.approx(
        0.02 * (1 + math.cos(0.99 * math.pi)) / 2
    )
    values = [meta_learning_rate(cosine, p) for p in [k / 50 for k in range(50)]]
    assert all(b < a for a, b in zip(values[:-1], values[1:], strict=True))


class _Killed(Exception):
    pass


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_meta_training_resumes_from_its_checkpoint_exactly(
    tmp_path: Path, lr_schedule: str
) -> None:
    """A run killed in its second trajectory and started again with the same checkpoint
    ends with the same meta-parameters and records as an uninterrupted run (the cosine
    learning rate too: it is a function of the trajectory and truncation)."""
    from l2l_tune.learned import MetaTrainingSchedule, meta_train
    from l2l_tune.tasks import MNIST

    digits = MNIST("digits", hidden=(8,))
    schedule = MetaTrainingSchedule(
        n_train=100, n_valid=100, problems=2, trajectories=3, min_truncations=2,
        mean_extra_truncations=1.0, min_steps=3, mean_extra_steps=2.0, lr_schedule=lr_schedule,
    )  # fmt: skip
    whole, whole_records = meta_train(digits, schedule, seed=3)
    if lr_schedule == "cosine":  # the schedule is applied: not the constant run's result
        constant, _ = meta_train(digits, replace(schedule, lr_schedule="constant"), seed=3)
        assert not torch.equal(constant.tensors()[0], whole.tensors()[0])

    def kill_in_second(record: Any) -> None:
        if record.trajectory == 1:
            raise _Killed

    path = tmp_path / "checkpoint.pt"
    with pytest.raises(_Killed):
        meta_train(digits, schedule, seed=3, checkpoint=path, callback=kill_in_second)
    assert path.exists()
    resumed, records = meta_train(digits, schedule, seed=3, checkpoint=path)
    assert records == whole_records
    for a, b in zip(resumed.tensors(), whole.tensors(), strict=True):
        assert torch.equal(a, b)
    other = MetaTrainingSchedule(n_train=100, n_valid=100, problems=2, trajectories=4)
    with pytest.raises(ValueError, match="another run"):
        meta_train(digits, other, seed=3, checkpoint=path)


def test_learn_command_writes_meta_parameters_a_user_can_train_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`l2l-tune learn` on digits writes meta.pt, result.json and a checkpoint; the saved
    optimizer trains a torch.nn model; bad arguments exit 2 naming the flag."""
    from l2l_tune.cli import main

    argv = ["learn", "--out", str(tmp_path), "--dataset", "digits", "--n-train", "100",
            "--n-valid", "100", "--problems", "2", "--trajectories", "1", "--truncations",
            "2", "0", "--steps", "3", "0", "--json", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["meta_steps"] == 2 and result["inner_steps"] == 6
    assert (tmp_path / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "result.json").read_text())["meta_steps"] == 2
    model = torch.nn.Linear(3, 2)
    opt = MLPOptimizer(model.parameters(), tmp_path / "meta.pt")
    before = model.weight.detach().clone()
    model(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight.detach())
    with pytest.raises(SystemExit) as exc:
        main([*argv[:3], "--problems", "0"])
    assert exc.value.code == 2
    assert "problems" in capsys.readouterr().err
    grouped = tmp_path / "grouped"
    argv_grouped = [*argv[:2], str(grouped), *argv[3:], "--group-size", "1", "--meta-set-size",
                    "50"]  # fmt: skip
    assert main(argv_grouped) == 0
    assert json.loads(capsys.readouterr().out)["schedule"]["meta_set_size"] == 50
    for flags, needle in [
        (["--worker-cpus", "-1"], "--worker-cpus"),
        (["--group-size", "0"], "group_size"),
        (["--meta-set-size", "101"], "meta_set_size"),
        (["--test-runs", "-1"], "--test-runs"),
        (["--test-steps", "0"], "--test-steps"),
        (["--lr-schedule", "linear"], "--lr-schedule"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main([*argv[:2], str(tmp_path / "bad"), *argv[3:], *flags])
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err


def test_learn_command_tests_the_optimizer_on_new_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_torch_thread: None
) -> None:
    """`l2l-tune learn --test-runs K` trains K new problems with the meta-trained optimizer
    (seed + 1000) and records what evaluate_on_new_problems gives for the saved optimizer;
    --lr-schedule reaches the schedule."""
    from l2l_tune.cli import main
    from l2l_tune.learned import LearnedRule, MetaParameters, evaluate_on_new_problems
    from l2l_tune.tasks import MNIST

    argv = ["learn", "--out", str(tmp_path), "--dataset", "digits", "--split", "train",
            "--n-train", "100", "--problems", "1", "--trajectories", "2", "--truncations",
            "3", "0", "--steps", "4", "0", "--lr-schedule", "cosine", "--seed", "2",
            "--test-runs", "2", "--test-steps", "30", "--meta-init", "fan-in",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "tested on 2 new problems × 30 steps: test accuracy" in capsys.readouterr().out
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["schedule"]["lr_schedule"] == "cosine"
    assert result["schedule"]["init"] == "fan-in"
    test = result["test"]
    assert (test["runs"], test["steps"], test["curve_steps"][-1]) == (2, 30, 30)
    assert len(test["test_accuracy_runs"]) == 2
    assert 0.0 <= test["test"]["test_accuracy"] <= 1.0
    meta = MetaParameters.load(tmp_path / "meta.pt")
    again = evaluate_on_new_problems(
        MNIST("digits"), LearnedRule(meta), None, n_train=100, label_noise=0.0, runs=2,
        steps=30, eval_every=30, seed=2 + 1000,
    )  # fmt: skip
    assert again["test_accuracy_runs"] == test["test_accuracy_runs"]
    assert again["test"]["train_accuracy"] == test["test"]["train_accuracy"]


def test_learned_rule_runs_the_tasks_as_the_truncation_does(one_torch_thread: None) -> None:
    """`LearnedRule` in the task's own run (`evaluate(None, t)`) ends where `run_truncation`
    does from the same initialisation and mini-batches: the training losses agree to 1e-10
    (float64), and the evaluation has no step size."""
    from l2l_tune.hypergrad import mlp
    from l2l_tune.learned import LearnedRule, init_states, run_truncation
    from l2l_tune.tasks import MNIST

    digits = MNIST("digits", dtype="float64")
    meta = meta64(1)
    meta = MetaParameters(meta.w1 * 0.1, meta.b1, meta.w2 * 0.1, meta.b2)  # a tame optimizer
    batch = digits.sample(3, 120, 0, seed=5, init="paper", optimizer=LearnedRule(meta))
    evaluation = batch.evaluate(None, 7, eval_every=7)
    assert evaluation.eta is None and evaluation.curve_steps.tolist() == [7]
    assert not evaluation.truncated.any()
    params = batch.initial_params()
    result = run_truncation(meta, params, init_states(params), batch.minibatches(0, 7),
                            batch.split_data("train"))  # fmt: skip
    x, y = batch.split_data("train")
    expected = mlp.loss(result.params, x, y)
    assert torch.allclose(torch.as_tensor(evaluation.train_loss), expected, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="batch_dims"):
        LearnedRule(meta, batch_dims=2)
    with pytest.raises(ValueError, match="meta must be"):
        LearnedRule("meta.pt")  # type: ignore[arg-type]


def test_paper_initialisation_selection_and_meta_set_positions() -> None:
    """`sample(init="paper")` draws N(0, 1)·1.2/√fan_in (biases too) from the batch's seed;
    `select` keeps the chosen tasks' data and networks; `split_data(positions=...)` takes the
    same positions of every task; bad input names the argument."""
    from l2l_tune.tasks import MNIST

    digits = MNIST("digits")
    batch = digits.sample(4, 200, 100, seed=2, init="paper")
    again = digits.sample(4, 200, 100, seed=2, init="paper")
    for a, b in zip(batch.initial_params(), again.initial_params(), strict=True):
        assert torch.equal(a, b)
    bias = batch.initial_params()[1]  # (4, 100): N(0, 1)·1.2/√64
    assert 0.1 < float(bias.std()) < 0.2 and float(bias.abs().max()) > 0.3
    part = batch.select([3, 1])
    assert part.m == 2
    assert torch.equal(part.initial_params()[0][0], batch.initial_params()[0][3])
    assert torch.equal(part.minibatches(4, 5)[0][0][1], batch.minibatches(4, 5)[0][0][1])
    x, y = batch.split_data("valid", [0, 7, 99])
    full_x, full_y = batch.split_data("valid")
    assert x.shape == (4, 3, 64) and torch.equal(y, full_y[:, [0, 7, 99]])
    assert torch.equal(x[:, 1], full_x[:, 7])
    for call, match in [
        (lambda: digits.sample(2, 10, init="kaiming"), "init"),
        (lambda: batch.select([4]), "problems"),
        (lambda: batch.select([]), "problems"),
        (lambda: batch.split_data("valid", [100]), "positions"),
        (lambda: batch.split_data("train", [0.5]), "positions"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


def test_accumulating_over_problem_groups_gives_the_stacked_meta_gradient() -> None:
    """Four problems stacked, in groups of one or of three-and-one: the same meta-parameters
    and meta-losses after two trajectories (float64, to 1e-10), a meta-objective on a random
    subset of the meta-set included."""
    from l2l_tune.learned import MetaTrainingSchedule, meta_train
    from l2l_tune.tasks import MNIST

    digits = MNIST("digits", hidden=(8,), dtype="float64")
    schedule = MetaTrainingSchedule(
        n_train=60, n_valid=40, problems=4, trajectories=2, min_truncations=2,
        mean_extra_truncations=0, min_steps=4, mean_extra_steps=0, meta_set_size=25,
    )  # fmt: skip
    stacked, stacked_records = meta_train(digits, schedule, seed=1)
    assert all(r.finite for r in stacked_records)
    for group_size in (1, 3):
        grouped, records = meta_train(digits, schedule, seed=1, group_size=group_size)
        for a, b in zip(grouped.tensors(), stacked.tensors(), strict=True):
            assert torch.allclose(a, b, rtol=0, atol=1e-10), group_size
        for r, s in zip(records, stacked_records, strict=True):
            assert r.meta_loss == pytest.approx(s.meta_loss, rel=1e-10)
    with pytest.raises(ValueError, match="group_size"):
        meta_train(digits, schedule, group_size=0)
    with pytest.raises(ValueError, match="workers"):
        meta_train(digits, schedule, workers=-1)
    with pytest.raises(ValueError, match="meta_set_size"):
        meta_train(digits, MetaTrainingSchedule(n_train=60, n_valid=40, meta_set_size=41))
    with pytest.raises(ValueError, match="meta_set_size"):
        MetaTrainingSchedule(meta_set_size=0)


def test_figure_protocol_passes_its_meta_learning_rate_schedule() -> None:
    """``reproduce fig4/fig5 --meta-lr-schedule/--meta-init`` reach every meta-training of the
    protocol and its description; --quick and --full keep the paper's constant rate and
    initialisation, the default budget anneals the rate and starts fan-in scaled."""
    from l2l_tune.reproduce.mnist_learned import LearnedProtocol

    for budget in ("quick", "full"):
        paper = LearnedProtocol.for_budget(budget)
        assert (paper.lr_schedule, paper.init) == ("constant", "authors")
        assert paper.schedule("valid", 1000, 1000, 0.2).lr_schedule == "constant"
        assert paper.schedule("train", 10, 0, 0.0).init == "authors"
        assert "cosine" not in paper.distance_from_the_paper()
        assert "fan-in" not in paper.distance_from_the_paper()
    default = LearnedProtocol.for_budget("default")
    assert (default.lr_schedule, default.init) == ("cosine", "fan-in")
    assert default.schedule("train", 1000, 0, 0.0).lr_schedule == "cosine"
    assert default.schedule("valid", 10, 10, 0.0).init == "fan-in"
    assert "cosine" in default.distance_from_the_paper()
    assert "fan-in" in default.distance_from_the_paper()
    paper_start = replace(default, lr_schedule="constant", init="authors")
    assert paper_start.schedule("valid", 10, 10, 0.0).init == "authors"
