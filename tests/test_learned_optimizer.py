"""The MLP optimizer of Metz et al. (paper Section 5): its state, features and step, checked
against the issue's specification written out by hand, and its torch.optim wrapper."""

from __future__ import annotations

import math
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
