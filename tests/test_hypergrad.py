"""Step-size hypergradients in PyTorch: the batched MLP, ``sgd_hypergradient``, ``HypergradSGD``.

References are independent of the code under test: ``torch.func`` (grad, jvp of
grad) for the MLP's hand-derived gradients and Hessian-vector products, plain
SGD loops with autograd for the trajectories, central finite differences and a
closed form for the step-size derivatives, and ``torch.optim.SGD`` for the
parameters that ``HypergradSGD`` produces.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch import Tensor, nn  # noqa: E402
from torch.func import functional_call  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.optim import Optimizer  # noqa: E402

from l2l_tune.hypergrad import (  # noqa: E402
    HYPERGRADIENT_METHODS,
    HypergradAdam,
    HypergradAdamW,
    Hypergradient,
    HypergradSGD,
    mlp,
    sgd_hypergradient,
)

F64 = torch.float64

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

#: ``loss.backward(create_graph=True)`` makes torch warn about a parameter ↔ gradient
#: reference cycle; expected here (HypergradSGD drops the graph in ``step``).
quiet_create_graph = pytest.mark.filterwarnings(
    "ignore:Using backward\\(\\) with create_graph=True:UserWarning"
)

#: torch's first forward-mode AD call scripts its jvp decompositions with the
#: deprecated ``torch.jit.script`` (torch's warning, not the library's).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def _relative(actual: float, expected: float) -> float:
    return abs(actual - expected) / max(abs(expected), 1e-300)


def _tree_relative(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> float:
    """Largest per-leaf ``‖a − b‖ / ‖b‖``."""
    assert len(actual) == len(expected)
    worst = 0.0
    for a, b in zip(actual, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        worst = max(worst, float((a - b).norm() / b.norm().clamp_min(1e-300)))
    return worst


# ------------------------------------------------------------------------ the MLP
#: (layer widths, number of networks m, batch size B)
MLP_SHAPES = [
    pytest.param((784, 100, 20, 10), 2, 16, id="paper-784-100-20-10-m2"),
    pytest.param((3, 2), 1, 4, id="tiny-3-2-m1"),
    pytest.param((5, 4, 3), 3, 7, id="5-4-3-m3"),
]


def _mlp_problem(
    sizes: tuple[int, ...], m: int, batch: int, seed: int = 0
) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
    """float64 params, a random tangent, inputs and labels."""
    gen = torch.Generator().manual_seed(seed)
    params = mlp.init_params(sizes, m, gen, dtype=F64)
    tangent = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
    x = torch.randn(m, batch, sizes[0], generator=gen, dtype=F64)
    y = torch.randint(0, sizes[-1], (m, batch), generator=gen)
    return params, tangent, x, y


@pytest.mark.parametrize(("sizes", "m", "batch"), MLP_SHAPES)
def test_mlp_gradient_matches_torch_func(sizes: tuple[int, ...], m: int, batch: int) -> None:
    """Hand-derived ``loss_and_gradient`` equals ``torch.func.grad`` of the summed loss."""
    params, _, x, y = _mlp_problem(sizes, m, batch)
    loss, grads = mlp.loss_and_gradient(params, x, y)
    reference = torch.func.grad(lambda p: mlp.loss(p, x, y).sum())(params)
    assert loss.shape == (m,)
    torch.testing.assert_close(loss, mlp.loss(params, x, y), rtol=1e-14, atol=0)
    assert _tree_relative(grads, reference) <= 1e-12


@pytest.mark.parametrize(("sizes", "m", "batch"), MLP_SHAPES)
def test_mlp_hvp_matches_jvp_of_grad(sizes: tuple[int, ...], m: int, batch: int) -> None:
    """``loss_gradient_and_hvp`` equals ``torch.func.jvp(torch.func.grad(...))``."""
    params, tangent, x, y = _mlp_problem(sizes, m, batch)
    loss, grads, hvp = mlp.loss_gradient_and_hvp(params, tangent, x, y)
    grad_fn = torch.func.grad(lambda p: mlp.loss(p, x, y).sum())
    ref_grads, ref_hvp = torch.func.jvp(grad_fn, (params,), (tangent,))
    torch.testing.assert_close(loss, mlp.loss(params, x, y), rtol=1e-14, atol=0)
    assert _tree_relative(grads, ref_grads) <= 1e-12
    assert _tree_relative(hvp, ref_hvp) <= 1e-12


@pytest.mark.parametrize(("sizes", "m", "batch"), MLP_SHAPES)
def test_mlp_directional_derivative_matches_jvp(sizes: tuple[int, ...], m: int, batch: int) -> None:
    """``loss_and_directional_derivative`` equals the jvp of the per-task ``mlp.loss``."""
    params, tangent, x, y = _mlp_problem(sizes, m, batch)
    loss, derivative = mlp.loss_and_directional_derivative(params, tangent, x, y)
    ref_loss, ref_derivative = torch.func.jvp(lambda p: mlp.loss(p, x, y), (params,), (tangent,))
    assert derivative.shape == (m,)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-14, atol=0)
    torch.testing.assert_close(derivative, ref_derivative, rtol=1e-12, atol=1e-14)


def test_mlp_logits_shape_and_per_task_independence() -> None:
    """``logits`` is ``(m, B, C)`` and task ``i`` only depends on network ``i``."""
    params, _, x, y = _mlp_problem((5, 4, 3), 3, 7)
    out = mlp.logits(params, x)
    assert out.shape == (3, 7, 3)
    single = [p[1:2] for p in params]
    torch.testing.assert_close(mlp.logits(single, x[1:2]), out[1:2], rtol=1e-15, atol=0)
    torch.testing.assert_close(
        mlp.loss(params, x, y), F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)
    )


def test_mlp_init_params_reproducible_and_dtype_independent() -> None:
    """A seed gives the same networks; float32 is the float64 draw rounded; CPU default."""
    sizes = (784, 100, 20, 10)
    a = mlp.init_params(sizes, 2, torch.Generator().manual_seed(7), dtype=F64)
    b = mlp.init_params(sizes, 2, torch.Generator().manual_seed(7), dtype=F64)
    c = mlp.init_params(sizes, 2, torch.Generator().manual_seed(8), dtype=F64)
    f32 = mlp.init_params(sizes, 2, torch.Generator().manual_seed(7), device="cpu")
    assert len(a) == 2 * (len(sizes) - 1)
    for pa, pb, pc, p32 in zip(a, b, c, f32, strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
        assert p32.dtype == torch.float32 and p32.device.type == "cpu"
        assert torch.equal(p32, pa.to(torch.float32))


@pytest.mark.parametrize("sizes", [(784, 100, 20, 10), (3, 2)])
def test_mlp_init_params_shapes_and_bound(sizes: tuple[int, ...]) -> None:
    """Weights ``(m, d_l, d_{l+1})``, biases ``(m, d_{l+1})``, uniform on ``±1/√fan_in``."""
    m = 3
    params = mlp.init_params(sizes, m, torch.Generator().manual_seed(0), dtype=F64)
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        weight, bias = params[2 * layer], params[2 * layer + 1]
        assert weight.shape == (m, fan_in, fan_out)
        assert bias.shape == (m, fan_out)
        bound = 1.0 / math.sqrt(fan_in)
        for p in (weight, bias):
            assert float(p.abs().max()) <= bound
        if weight.numel() >= 1000:  # the draw fills the interval, both signs
            assert float(weight.max()) > 0.95 * bound
            assert float(weight.min()) < -0.95 * bound
            assert abs(float(weight.mean())) < 0.05 * bound


# ------------------------------------------------------------ sgd_hypergradient
class Problem:
    """A small ``nn.Sequential`` classifier, its functional losses and mini-batches (float64)."""

    def __init__(self, activation: str = "tanh", seed: int = 0, t: int = 6) -> None:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        act: nn.Module = nn.Tanh() if activation == "tanh" else nn.ReLU()
        self.model = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 3)).to(F64)
        self.x = torch.randn(t * 5, 4, generator=gen, dtype=F64)
        self.y = torch.randint(0, 3, (t * 5,), generator=gen)
        self.x_val = torch.randn(20, 4, generator=gen, dtype=F64)
        self.y_val = torch.randint(0, 3, (20,), generator=gen)
        self.batches = list(zip(self.x.split(5), self.y.split(5), strict=True))
        self.names = [name for name, _ in self.model.named_parameters()]

    def params(self) -> dict[str, Tensor]:
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    def loss_fn(self, params: dict[str, Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(functional_call(self.model, params, (batch[0],)), batch[1])

    def val_loss(self, params: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(functional_call(self.model, params, (self.x_val,)), self.y_val)

    def train_loss(self, params: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(functional_call(self.model, params, (self.x,)), self.y)


def _manual_sgd(
    loss_fn: Callable[[dict[str, Tensor], Any], Tensor],
    params: dict[str, Tensor],
    batches: Sequence[Any],
    lrs: Sequence[float],
) -> dict[str, Tensor]:
    """Plain SGD with autograd; ``lrs[k]`` is the step size of step ``k``."""
    current = {k: v.detach().clone() for k, v in params.items()}
    for batch, lr in zip(batches, lrs, strict=True):
        leaves = {k: v.requires_grad_(True) for k, v in current.items()}
        grads = torch.autograd.grad(loss_fn(leaves, batch), list(leaves.values()))
        current = {
            k: (v - lr * g).detach() for (k, v), g in zip(leaves.items(), grads, strict=True)
        }
    return current


@pytest.fixture(scope="module")
def tanh_problem() -> Problem:
    return Problem("tanh")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_functional_methods_agree(activation: str) -> None:
    """forward ≈ backprop to 1e-10, forward ≈ central differences to 1e-5 (float64)."""
    prob = Problem(activation, seed=1)
    p0 = prob.params()
    args = (prob.loss_fn, p0, prob.batches, 0.4, prob.val_loss)
    fwd = sgd_hypergradient(*args, method="forward")
    back = sgd_hypergradient(*args, method="backprop")
    # tanh is smooth: a relative step of 1e-5 balances truncation and rounding. The
    # ReLU net is piecewise smooth; 1e-6 crosses no kink here (checked against 1e-5).
    fd_step = 1e-5 if activation == "tanh" else 1e-6
    fd = sgd_hypergradient(*args, method="finite-difference", fd_step=fd_step)
    if activation == "relu":
        other = sgd_hypergradient(*args, method="finite-difference", fd_step=1e-5)
        assert _relative(other.gradient, fd.gradient) <= 1e-6
    assert isinstance(fwd, Hypergradient)
    assert fwd.gradient != 0.0 and math.isfinite(fwd.gradient)
    assert _relative(back.gradient, fwd.gradient) <= 1e-10
    assert _relative(fd.gradient, fwd.gradient) <= 1e-5
    for result in (back, fd):
        assert _relative(result.value, fwd.value) <= 1e-12


def test_functional_value_and_params_equal_plain_sgd_run(tanh_problem: Problem) -> None:
    """``value`` is the meta-loss after a plain SGD run and ``params`` its final weights."""
    prob = tanh_problem
    p0 = prob.params()
    lr = 0.4
    final = _manual_sgd(prob.loss_fn, p0, prob.batches, [lr] * len(prob.batches))
    expected = float(prob.val_loss(final))
    for method in HYPERGRADIENT_METHODS:
        result = sgd_hypergradient(prob.loss_fn, p0, prob.batches, lr, prob.val_loss, method=method)
        assert _relative(result.value, expected) <= 1e-13, method
        assert set(result.params) == set(final)
        for name in final:
            torch.testing.assert_close(result.params[name], final[name], rtol=1e-13, atol=1e-15)
            assert not result.params[name].requires_grad


def test_functional_does_not_modify_params(tanh_problem: Problem) -> None:
    """The input pytree is left untouched (values, requires_grad) by every method."""
    prob = tanh_problem
    p0 = {k: v.clone().requires_grad_(True) for k, v in prob.params().items()}
    before = {k: v.detach().clone() for k, v in p0.items()}
    for method in HYPERGRADIENT_METHODS:
        result = sgd_hypergradient(
            prob.loss_fn, p0, prob.batches, 0.4, prob.val_loss, method=method
        )
        for name, value in p0.items():
            assert torch.equal(value.detach(), before[name]), method
            assert value.requires_grad and value.grad is None
            assert result.params[name] is not value


def test_functional_dict_and_tuple_pytrees_agree(tanh_problem: Problem) -> None:
    """A tuple of tensors gives the same hypergradient as the dict of named parameters."""
    prob = tanh_problem
    names = prob.names

    def tuple_loss(params: tuple[Tensor, ...], batch: tuple[Tensor, Tensor]) -> Tensor:
        return prob.loss_fn(dict(zip(names, params, strict=True)), batch)

    def tuple_meta(params: tuple[Tensor, ...]) -> Tensor:
        return prob.val_loss(dict(zip(names, params, strict=True)))

    as_dict = prob.params()
    as_tuple = tuple(as_dict[name] for name in names)
    for method in ("forward", "backprop"):
        d = sgd_hypergradient(
            prob.loss_fn, as_dict, prob.batches, 0.4, prob.val_loss, method=method
        )
        t = sgd_hypergradient(tuple_loss, as_tuple, prob.batches, 0.4, tuple_meta, method=method)
        assert isinstance(d.params, dict) and isinstance(t.params, tuple)
        assert _relative(t.gradient, d.gradient) <= 1e-14
        assert _relative(t.value, d.value) <= 1e-14
        for name, leaf in zip(names, t.params, strict=True):
            torch.testing.assert_close(leaf, d.params[name], rtol=1e-15, atol=0)


def test_functional_accepts_a_one_shot_iterable_of_batches(tanh_problem: Problem) -> None:
    """``batches`` may be a generator (materialised once)."""
    prob = tanh_problem
    p0 = prob.params()
    from_list = sgd_hypergradient(prob.loss_fn, p0, prob.batches, 0.4, prob.val_loss)
    from_gen = sgd_hypergradient(prob.loss_fn, p0, (b for b in prob.batches), 0.4, prob.val_loss)
    assert from_gen.gradient == from_list.gradient
    assert from_gen.value == from_list.value


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["forward", "backprop"])
def test_functional_one_step_closed_form(dtype: Any, method: str) -> None:
    """t = 1 on ℓ = ½‖w − c‖², M = ½‖w‖²: dM/dη = −⟨w₀ − η(w₀ − c), w₀ − c⟩, exactly.

    All numbers are dyadic, so every operation is exact in binary floating point.
    """
    w0 = torch.tensor([1.0, 2.0, -0.5], dtype=dtype)
    c = torch.tensor([0.5, -1.0, 0.25], dtype=dtype)
    eta = 0.25
    g = [1.0 - 0.5, 2.0 + 1.0, -0.5 - 0.25]  # w0 − c
    w1 = [w - eta * gi for w, gi in zip([1.0, 2.0, -0.5], g, strict=True)]
    expected_value = 0.5 * sum(w * w for w in w1)
    expected_gradient = -sum(w * gi for w, gi in zip(w1, g, strict=True))
    assert expected_gradient == -4.421875  # 0.875·0.5 + 1.25·3 + 0.3125·0.75

    def loss(w: Tensor, batch: Tensor) -> Tensor:
        return 0.5 * ((w - batch) ** 2).sum()

    def meta(w: Tensor) -> Tensor:
        return 0.5 * (w**2).sum()

    result = sgd_hypergradient(loss, w0, [c], eta, meta, method=method)
    assert result.gradient == expected_gradient
    assert result.value == expected_value
    assert result.params.tolist() == w1
    fd = sgd_hypergradient(loss, w0, [c], eta, meta, method="finite-difference")
    assert _relative(fd.gradient, expected_gradient) <= (1e-7 if dtype == F64 else 1e-2)


def test_functional_lr_zero_forward_and_backprop() -> None:
    """At η = 0 nothing moves and dM/dη = −t⟨∇M(w₀), ∇ℓ(w₀)⟩ for a fixed batch."""
    w0 = torch.tensor([1.0, 2.0], dtype=F64)
    c = torch.tensor([0.0, 1.0], dtype=F64)

    def loss(w: Tensor, batch: Tensor) -> Tensor:
        return 0.5 * ((w - batch) ** 2).sum()

    def meta(w: Tensor) -> Tensor:
        return 0.5 * (w**2).sum()

    for method in ("forward", "backprop"):
        result = sgd_hypergradient(loss, w0, [c] * 3, 0, meta, method=method)
        assert result.value == 2.5
        assert result.gradient == -3 * (1.0 * 1.0 + 2.0 * 1.0)


def test_functional_large_step_size_contrast() -> None:
    """η·L > 2 with a long unroll (t = 400, float32): the run itself diverges.

    Observed (torch 2.x): the iterates overflow and then turn into NaN (inf − inf),
    so the plain run's meta-loss is NaN; forward mode reports exactly that value
    (it runs the same arithmetic), with a warning that the hypergradient is not
    finite, and reverse mode cannot produce a usable derivative (non-finite).
    Below the threshold (η·L = 1.9) both agree.
    """
    w0 = torch.linspace(0.2, 1.0, 5)
    c = torch.ones(5)

    def loss(w: Tensor, batch: Tensor) -> Tensor:  # L = 1
        return 0.5 * ((w - batch) ** 2).sum()

    def meta(w: Tensor) -> Tensor:
        return 0.5 * (w**2).sum()

    t, eta = 400, 2.5  # |1 − ηL|^t = 1.5^400 overflows float32 near t ≈ 220
    w = w0.clone()
    for _ in range(t):
        w = w - eta * (w - c)
    plain = float(meta(w))

    with pytest.warns(RuntimeWarning, match=r"non-finite hypergradient for \['lr'\]"):
        fwd = sgd_hypergradient(loss, w0, [c] * t, eta, meta, method="forward")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # reverse mode: inf/NaN or 0
        back = sgd_hypergradient(loss, w0, [c] * t, eta, meta, method="backprop")
    assert fwd.value == plain or (math.isnan(fwd.value) and math.isnan(plain))
    assert not math.isfinite(plain)  # the unrolled run itself diverged
    assert not math.isfinite(back.gradient) or back.gradient == 0.0

    stable_fwd = sgd_hypergradient(loss, w0, [c] * t, 1.9, meta, method="forward")
    stable_back = sgd_hypergradient(loss, w0, [c] * t, 1.9, meta, method="backprop")
    assert math.isfinite(stable_fwd.gradient) and math.isfinite(stable_back.gradient)
    assert stable_fwd.value == pytest.approx(stable_back.value, rel=1e-6)
    assert stable_fwd.gradient == pytest.approx(stable_back.gradient, rel=1e-4)


def _tiny_loss(w: Tensor, batch: Tensor) -> Tensor:
    return 0.5 * ((w - batch) ** 2).sum()


def _tiny_meta(w: Tensor) -> Tensor:
    return 0.5 * (w**2).sum()


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        pytest.param({"method": "adjoint"}, "method", id="unknown-method"),
        pytest.param({"lr": -0.1}, "lr", id="negative-lr"),
        pytest.param({"lr": float("nan")}, "lr", id="nan-lr"),
        pytest.param({"lr": float("inf")}, "lr", id="inf-lr"),
        pytest.param({"batches": []}, "batches", id="no-batches"),
        pytest.param({"batches": iter(())}, "batches", id="empty-iterator"),
        pytest.param({"params": [1.0, 2.0]}, "params", id="non-tensor-params"),
        pytest.param({"params": {}}, "params", id="empty-params"),
        pytest.param({"params": torch.tensor([1, 2])}, "params", id="integer-params"),
        pytest.param({"method": "finite-difference", "fd_step": 0.0}, "fd_step", id="fd-step-0"),
        pytest.param({"method": "finite-difference", "fd_step": -1e-3}, "fd_step", id="fd-neg"),
        pytest.param(
            {"method": "finite-difference", "fd_step": float("nan")}, "fd_step", id="fd-nan"
        ),
        pytest.param({"method": "finite-difference", "lr": 0.0}, "lr", id="fd-lr-0"),
    ],
)
def test_functional_bad_input(overrides: dict[str, Any], name: str) -> None:
    """Bad arguments raise ``ValueError`` naming the argument."""
    kwargs: dict[str, Any] = {
        "loss_fn": _tiny_loss,
        "params": torch.ones(2, dtype=F64),
        "batches": [torch.zeros(2, dtype=F64)],
        "lr": 0.1,
        "meta_loss_fn": _tiny_meta,
        "method": "forward",
    }
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=name):
        sgd_hypergradient(**kwargs)


# ---------------------------------------------------------------- HypergradSGD
def _train(
    prob: Problem,
    model: nn.Module,
    opt: Optimizer,
    batches: Sequence[tuple[Tensor, Tensor]],
    *,
    create_graph: bool = True,
) -> None:
    """The standard loop (with the two-line change when ``create_graph``)."""
    for x, y in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward(create_graph=create_graph)
        opt.step()


def _val(prob: Problem, model: nn.Module) -> Tensor:
    return F.cross_entropy(model(prob.x_val), prob.y_val)


@quiet_create_graph
def test_optimizer_matches_functional_methods(tanh_problem: Problem) -> None:
    """A DataLoader loop with HypergradSGD gives forward's/backprop's dM/dη (1e-10), FD's (1e-5)."""
    prob = tanh_problem
    p0 = prob.params()
    model = copy.deepcopy(prob.model)
    lr = 0.4
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(prob.x, prob.y), batch_size=5, shuffle=False
    )
    batches = [(x, y) for x, y in loader]
    opt = HypergradSGD(model.parameters(), lr=lr)
    _train(prob, model, opt, batches)
    value = _val(prob, model)
    got = opt.hypergradient(value)

    args = (prob.loss_fn, p0, batches, lr, prob.val_loss)
    fwd = sgd_hypergradient(*args, method="forward")
    back = sgd_hypergradient(*args, method="backprop")
    fd = sgd_hypergradient(*args, method="finite-difference", fd_step=1e-5)
    assert isinstance(got, float) and got != 0.0
    assert _relative(got, fwd.gradient) <= 1e-10
    assert _relative(got, back.gradient) <= 1e-10
    assert _relative(got, fd.gradient) <= 1e-5
    assert _relative(float(value.detach()), fwd.value) <= 1e-13


@quiet_create_graph
def test_optimizer_parameters_equal_torch_sgd(tanh_problem: Problem) -> None:
    """After training, the weights equal ``torch.optim.SGD``'s (same lr, same batches)."""
    prob = tanh_problem
    ours, theirs = copy.deepcopy(prob.model), copy.deepcopy(prob.model)
    _train(prob, ours, HypergradSGD(ours.parameters(), lr=0.4), prob.batches)
    _train(
        prob, theirs, torch.optim.SGD(theirs.parameters(), lr=0.4), prob.batches, create_graph=False
    )
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=0)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-15, atol=0)


@quiet_create_graph
def test_optimizer_parameter_groups_sharing_one_lr(tanh_problem: Problem) -> None:
    """Two groups with the same lr give the same run and hypergradient as one group."""
    prob = tanh_problem
    single, grouped = copy.deepcopy(prob.model), copy.deepcopy(prob.model)
    opt_single = HypergradSGD(single.parameters(), lr=0.4)
    opt_grouped = HypergradSGD(
        [{"params": grouped[0].parameters()}, {"params": grouped[2].parameters(), "lr": 0.4}],
        lr=0.4,
    )
    _train(prob, single, opt_single, prob.batches)
    _train(prob, grouped, opt_grouped, prob.batches)
    a = opt_single.hypergradient(_val(prob, single))
    b = opt_grouped.hypergradient(_val(prob, grouped))
    assert _relative(b, a) <= 1e-14
    for p, q in zip(single.parameters(), grouped.parameters(), strict=True):
        assert torch.equal(p, q)


@quiet_create_graph
def test_optimizer_train_by_validation_and_train_by_train(tanh_problem: Problem) -> None:
    """``hypergradient`` of a validation loss (TbV) and of the training loss (TbT)."""
    prob = tanh_problem
    model = copy.deepcopy(prob.model)
    opt = HypergradSGD(model.parameters(), lr=0.4)
    _train(prob, model, opt, prob.batches)
    tbv = opt.hypergradient(_val(prob, model))
    tbt = opt.hypergradient(F.cross_entropy(model(prob.x), prob.y))

    p0 = prob.params()
    ref_v = sgd_hypergradient(prob.loss_fn, p0, prob.batches, 0.4, prob.val_loss)
    ref_t = sgd_hypergradient(prob.loss_fn, p0, prob.batches, 0.4, prob.train_loss)
    assert _relative(tbv, ref_v.gradient) <= 1e-10
    assert _relative(tbt, ref_t.gradient) <= 1e-10
    assert _relative(tbt, tbv) > 1e-3  # two different meta-objectives


@quiet_create_graph
def test_optimizer_reset_hypergradient_restarts_the_unroll(tanh_problem: Problem) -> None:
    """After ``reset_hypergradient()``: the result of a fresh run from the current weights."""
    prob = tanh_problem
    model = copy.deepcopy(prob.model)
    opt = HypergradSGD(model.parameters(), lr=0.4)
    _train(prob, model, opt, prob.batches[:3])
    middle = {k: v.detach().clone() for k, v in model.named_parameters()}
    whole = sgd_hypergradient(prob.loss_fn, prob.params(), prob.batches, 0.4, prob.val_loss)
    opt.reset_hypergradient()
    assert opt.hypergradient(_val(prob, model)) == 0.0
    _train(prob, model, opt, prob.batches[3:])
    got = opt.hypergradient(_val(prob, model))
    fresh = sgd_hypergradient(prob.loss_fn, middle, prob.batches[3:], 0.4, prob.val_loss)
    assert _relative(got, fresh.gradient) <= 1e-10
    assert _relative(got, whole.gradient) > 1e-3  # not the whole unroll's


@quiet_create_graph
def test_optimizer_lr_change_is_a_shift_of_every_step(tanh_problem: Problem) -> None:
    """With lr changed mid-way, the result is d/ds of M after steps with η_k + s (central FD)."""
    prob = tanh_problem
    model = copy.deepcopy(prob.model)
    lrs = [0.4, 0.4, 0.4, 0.1, 0.1, 0.1]
    opt = HypergradSGD(model.parameters(), lr=lrs[0])
    for (x, y), lr in zip(prob.batches, lrs, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        _train(prob, model, opt, [(x, y)])
    got = opt.hypergradient(_val(prob, model))

    p0, h = prob.params(), 1e-5

    def meta_after(shift: float) -> float:
        final = _manual_sgd(prob.loss_fn, p0, prob.batches, [lr + shift for lr in lrs])
        return float(prob.val_loss(final))

    expected = (meta_after(h) - meta_after(-h)) / (2 * h)
    assert _relative(got, expected) <= 1e-6
    assert _relative(float(_val(prob, model).detach()), meta_after(0.0)) <= 1e-13
    # a constant-lr run's derivative is a different number
    constant = sgd_hypergradient(prob.loss_fn, p0, prob.batches, 0.4, prob.val_loss)
    assert _relative(got, constant.gradient) > 1e-3


def test_optimizer_plain_backward_raises(tanh_problem: Problem) -> None:
    """``loss.backward()`` without the graph → RuntimeError telling to use create_graph=True."""
    prob = tanh_problem
    model = copy.deepcopy(prob.model)
    opt = HypergradSGD(model.parameters(), lr=0.4)
    x, y = prob.batches[0]
    F.cross_entropy(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="create_graph=True"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@quiet_create_graph
def test_optimizer_bad_meta_loss(tanh_problem: Problem) -> None:
    """A non-scalar meta-loss, one computed under no_grad, or a float → ValueError."""
    prob = tanh_problem
    model = copy.deepcopy(prob.model)
    opt = HypergradSGD(model.parameters(), lr=0.4)
    _train(prob, model, opt, prob.batches[:2])
    per_sample = F.cross_entropy(model(prob.x_val), prob.y_val, reduction="none")
    with pytest.raises(ValueError, match="meta_loss"):
        opt.hypergradient(per_sample)
    with torch.no_grad():
        detached = _val(prob, model)
    with pytest.raises(ValueError, match="meta_loss"):
        opt.hypergradient(detached)
    with pytest.raises(ValueError, match="meta_loss"):
        opt.hypergradient(float(detached))  # type: ignore[arg-type]


def test_optimizer_bad_arguments() -> None:
    """lr, momentum or weight_decay < 0 or NaN, betas outside [0, 1), Nesterov without momentum,
    an unknown or unused name in hypergradients_of → ValueError naming the argument."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    first, second = list(model[0].parameters()), list(model[2].parameters())
    with pytest.raises(ValueError, match="lr"):
        HypergradSGD(model.parameters(), lr=-0.1)
    with pytest.raises(ValueError, match="lr"):
        HypergradSGD(model.parameters(), lr=float("nan"))
    with pytest.raises(ValueError, match=r"lr in param_groups\[0\]"):
        HypergradSGD([{"params": first, "lr": -0.1}, {"params": second}], lr=0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        HypergradSGD([{"params": first}, {"params": second, "weight_decay": -1e-4}], lr=0.1)
    with pytest.raises(ValueError, match="momentum"):
        HypergradSGD(model.parameters(), lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov"):
        HypergradSGD(model.parameters(), lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta2"):
        HypergradAdam(model.parameters(), betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas"):
        HypergradAdam(model.parameters(), betas=(0.9,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps"):
        HypergradAdamW(model.parameters(), eps=-1.0)
    with pytest.raises(ValueError, match="hypergradients_of"):
        HypergradSGD(model.parameters(), lr=0.1, hypergradients_of=("lr", "beta1"))
    with pytest.raises(ValueError, match="hypergradients_of"):
        HypergradAdam(model.parameters(), hypergradients_of=("lr", "lr"))
    with pytest.raises(ValueError, match="hypergradients_of"):
        HypergradAdam(model.parameters(), hypergradients_of=())


@quiet_create_graph
def test_optimizer_values_made_bad_after_construction_raise_at_step() -> None:
    """A negative lr set after construction, or group lrs made to differ after the tangents
    started (a shared direction cannot become per-group), fail at ``step``."""
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(F64)
    opt = HypergradSGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=0.1
    )
    x = torch.randn(4, 2, dtype=F64)
    model(x).pow(2).mean().backward(create_graph=True)
    opt.step()
    opt.zero_grad()
    model(x).pow(2).mean().backward(create_graph=True)
    opt.param_groups[1]["lr"] = 0.2
    with pytest.raises(ValueError, match="reset_hypergradients"):
        opt.step()
    opt.reset_hypergradients()
    opt.step()  # per-group from here on
    assert isinstance(opt.hypergradients(model(x).pow(2).mean())["lr"], list)
    for group in opt.param_groups:
        group["lr"] = -0.1
    with pytest.raises(ValueError, match="lr"):
        opt.step()


@quiet_create_graph
def test_optimizer_step_drops_the_graph(tanh_problem: Problem) -> None:
    """After ``step()`` every ``.grad`` is a plain tensor (no graph kept → no memory growth)."""
    prob = tanh_problem
    model = copy.deepcopy(prob.model)
    opt = HypergradSGD(model.parameters(), lr=0.4)
    x, y = prob.batches[0]
    loss = F.cross_entropy(model(x), y)
    loss.backward(create_graph=True)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.grad_fn is not None for g in grads)
    expected = [g.detach().clone() for g in grads if g is not None]
    opt.step()
    for p, g in zip(model.parameters(), expected, strict=True):
        assert p.grad is not None
        assert p.grad.grad_fn is None and not p.grad.requires_grad
        assert torch.equal(p.grad, g)
    for state in opt.state.values():
        for tangent in state["tangents"]:
            assert all(x.grad_fn is None and not x.requires_grad for x in tangent)


@quiet_create_graph
def test_optimizer_closure_like_torch_sgd(tanh_problem: Problem) -> None:
    """``step(closure)`` calls the closure once, returns its loss and matches torch.optim.SGD."""
    prob = tanh_problem
    ours, theirs = copy.deepcopy(prob.model), copy.deepcopy(prob.model)
    opt = HypergradSGD(ours.parameters(), lr=0.4)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.4)
    losses: list[float] = []
    for x, y in prob.batches:

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(ours(x), y)
            loss.backward(create_graph=True)
            losses.append(float(loss.detach()))
            return loss

        def ref_closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            ref.zero_grad()
            loss = F.cross_entropy(theirs(x), y)
            loss.backward()
            return loss

        returned = opt.step(closure)
        ref_returned = ref.step(ref_closure)
        assert isinstance(returned, Tensor) and float(returned.detach()) == losses[-1]
        assert float(returned.detach()) == pytest.approx(float(ref_returned.detach()), rel=1e-15)
    assert len(losses) == len(prob.batches)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=0)
    reference = sgd_hypergradient(prob.loss_fn, prob.params(), prob.batches, 0.4, prob.val_loss)
    assert _relative(opt.hypergradient(_val(prob, ours)), reference.gradient) <= 1e-10


@quiet_create_graph
def test_optimizer_no_step_gives_zero_and_frozen_params_are_skipped() -> None:
    """Before any step the hypergradient is 0; parameters with requires_grad=False don't move."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(F64)
    bias = model[0].bias
    assert isinstance(bias, Tensor)
    bias.requires_grad_(False)
    frozen = bias.detach().clone()
    opt = HypergradSGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 2, dtype=F64)
    assert opt.hypergradient(model(x).pow(2).mean()) == 0.0
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward(create_graph=True)
        opt.step()
    assert torch.equal(bias, frozen)
    assert math.isfinite(opt.hypergradient(model(x).pow(2).mean()))


# ------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@needs_cuda
def test_cuda_forward_matches_backprop_float64() -> None:
    """On CUDA in float64, forward and backprop agree to 1e-10 (MLP and nn.Sequential)."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    sizes = (784, 100, 20, 10)
    cpu_params = mlp.init_params(sizes, 1, gen, dtype=F64)
    params = mlp.init_params(sizes, 1, torch.Generator().manual_seed(0), dtype=F64, device=device)
    for a, b in zip(params, cpu_params, strict=True):
        assert a.device.type == "cuda" and torch.equal(a.cpu(), b)
    x = torch.randn(8, 1, 32, sizes[0], generator=gen, dtype=F64).to(device)
    y = torch.randint(0, 10, (8, 1, 32), generator=gen).to(device)
    batches = list(zip(x[:-1], y[:-1], strict=True))

    def loss(p: list[Tensor], batch: tuple[Tensor, Tensor]) -> Tensor:
        return mlp.loss(p, batch[0], batch[1]).sum()

    def meta(p: list[Tensor]) -> Tensor:
        return mlp.loss(p, x[-1], y[-1]).sum()

    fwd = sgd_hypergradient(loss, params, batches, 0.1, meta, method="forward")
    back = sgd_hypergradient(loss, params, batches, 0.1, meta, method="backprop")
    assert math.isfinite(fwd.gradient) and fwd.gradient != 0.0
    assert _relative(back.gradient, fwd.gradient) <= 1e-10
    assert _relative(back.value, fwd.value) <= 1e-12
    assert all(p.device.type == "cuda" for p in fwd.params)


# ---------------------------------------------------------------------- regressions
def test_constant_gradient_of_one_parameter_is_not_mistaken_for_plain_backward() -> None:
    """A loss linear in one parameter (a last bias under a linear loss): its gradient has no
    graph, its Hessian rows are 0, and the step must go through."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = HypergradSGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(3):
            opt.zero_grad()
            (-(model(x) * y).mean()).backward(create_graph=True)
            opt.step()
    hg = opt.hypergradient((model(x) ** 2).mean())

    def loss_fn(p: Any, batch: Any) -> Tensor:
        return -(torch.func.functional_call(model, p, (x,)) * y).mean()

    def meta_fn(p: Any) -> Tensor:
        return (torch.func.functional_call(model, p, (x,)) ** 2).mean()

    ref = sgd_hypergradient(loss_fn, init, [None] * 3, 0.1, meta_fn, method="backprop")
    assert hg == pytest.approx(ref.gradient, rel=1e-10)


def test_backprop_allows_parameters_the_loss_does_not_use() -> None:
    p0 = {"w": torch.ones(3, dtype=torch.float64), "unused": torch.ones(2, dtype=torch.float64)}

    def loss_fn(p: Any, b: Tensor) -> Tensor:
        return 0.5 * ((p["w"] - b) ** 2).sum()

    def meta_fn(p: Any) -> Tensor:
        return 0.5 * (p["w"] ** 2).sum()

    batches = [torch.zeros(3, dtype=torch.float64)] * 3
    forward = sgd_hypergradient(loss_fn, p0, batches, 0.1, meta_fn, method="forward")
    backprop = sgd_hypergradient(loss_fn, p0, batches, 0.1, meta_fn, method="backprop")
    assert backprop.gradient == pytest.approx(forward.gradient, rel=1e-14)


@pytest.mark.parametrize("fd_step", [0.0, -1.0, 1.0, math.inf, True])
def test_fd_step_is_checked_for_every_method(fd_step: Any) -> None:
    p0 = (torch.ones(2, dtype=torch.float64),)
    with pytest.raises(ValueError, match="fd_step"):
        sgd_hypergradient(
            lambda p, b: (p[0] ** 2).sum(), p0, [None], 0.1, lambda p: p[0].sum(),
            method="forward", fd_step=fd_step,
        )  # fmt: skip
