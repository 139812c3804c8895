"""Update rules and their hypergradients: SGD (momentum, Nesterov, weight decay), Adam, AdamW.

References independent of the code under test: the real ``torch.optim`` classes (the
drop-in optimizers' weights must equal theirs bit for bit on CPU), reverse mode
through the unrolled run (autograd, another code path than the forward tangents),
and central finite differences of the training run itself.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.optim import Optimizer  # noqa: E402

from l2l_tune.hypergrad import (  # noqa: E402
    HypergradAdam,
    HypergradAdamW,
    HypergradOptimizer,
    HypergradSGD,
    hypergradients,
    sgd_hypergradient,
)
from l2l_tune.hypergrad.rules import SGD, Adam, AdamW, Scheduled, UpdateRule  # noqa: E402

F64 = torch.float64

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning"),
]

#: (drop-in class, torch.optim class, keyword arguments): every configuration of every rule.
CONFIGURATIONS = [
    pytest.param(HypergradSGD, torch.optim.SGD, {"lr": 0.1}, id="sgd"),
    pytest.param(
        HypergradSGD,
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3},
        id="sgd-momentum-wd",
    ),
    pytest.param(
        HypergradSGD,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        id="sgd-nesterov",
    ),
    pytest.param(
        HypergradSGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "dampening": 0.3}, id="sgd-damp"
    ),
    pytest.param(HypergradSGD, torch.optim.SGD, {"lr": 0.1, "maximize": True}, id="sgd-maximize"),
    pytest.param(HypergradAdam, torch.optim.Adam, {"lr": 0.01}, id="adam"),
    pytest.param(HypergradAdam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 1e-2}, id="adam-l2"),
    pytest.param(HypergradAdam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True}, id="amsgrad"),
    pytest.param(HypergradAdamW, torch.optim.AdamW, {"lr": 0.01}, id="adamw"),
    pytest.param(
        HypergradAdamW,
        torch.optim.AdamW,
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1, "amsgrad": True},
        id="adamw-amsgrad",
    ),
]


def _classifier(dtype: Any, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)
    x = torch.randn(40, 5, dtype=dtype)
    y = torch.randint(0, 3, (40,))
    return model, x, y


def _train(
    model: nn.Module,
    opt: Optimizer,
    x: Tensor,
    y: Tensor,
    steps: int,
    *,
    create_graph: bool,
) -> None:
    for k in range(steps):
        rows = slice((k * 8) % 40, (k * 8) % 40 + 8)
        opt.zero_grad()
        F.cross_entropy(model(x[rows]), y[rows]).backward(create_graph=create_graph)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("ours", "theirs", "kwargs"), CONFIGURATIONS)
def test_drop_in_weights_equal_torch_optim(
    ours: type[HypergradOptimizer],
    theirs: type[Optimizer],
    kwargs: dict[str, Any],
    dtype: Any,
) -> None:
    """Same seed, same batches: the weights and the state equal torch.optim's bit for bit."""
    model, x, y = _classifier(dtype)
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    opt_a, opt_b = ours(a.parameters(), **kwargs), theirs(b.parameters(), **kwargs)
    _train(a, opt_a, x, y, 30, create_graph=True)
    _train(b, opt_b, x, y, 30, create_graph=False)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        for name, value in opt_b.state[q].items():
            if isinstance(value, Tensor) and name != "step":
                assert torch.equal(opt_a.state[p][name], value), name
    grads = opt_a.hypergradients(F.cross_entropy(a(x), y))
    assert set(grads) == set(opt_a.hypergradient_names)
    assert all(isinstance(g, float) and math.isfinite(g) and g != 0.0 for g in grads.values())


# --------------------------------------------------------------- exactness at t >= 1000
_X = torch.randn(64, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
_Y = torch.randn(64, dtype=F64, generator=torch.Generator().manual_seed(1))
_XV = torch.randn(32, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
_YV = torch.randn(32, dtype=F64, generator=torch.Generator().manual_seed(3))


def _net(p: tuple[Tensor, Tensor, Tensor], x: Tensor) -> Tensor:
    return torch.tanh(x @ p[0] + p[1]) @ p[2]


def _loss(p: tuple[Tensor, Tensor, Tensor], rows: Tensor) -> Tensor:
    return ((_net(p, _X[rows]) - _Y[rows]) ** 2).mean()


def _meta(p: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    return ((_net(p, _XV) - _YV) ** 2).mean()


def _start() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(4)
    return (
        torch.randn(4, 6, dtype=F64, generator=gen) * 0.5,
        torch.zeros(6, dtype=F64),
        torch.randn(6, dtype=F64, generator=gen) * 0.3,
    )


def _batches(t: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(5)
    return [torch.randint(0, 64, (8,), generator=gen) for _ in range(t)]


#: (rule, hyperparameters, names): every hyperparameter of every rule.
EXACTNESS = [
    pytest.param(
        SGD(momentum_buffer=True),
        {"lr": 0.02, "momentum": 0.5, "weight_decay": 1e-2, "dampening": 0.1},
        ("lr", "momentum", "dampening", "weight_decay"),
        id="sgd-momentum",
    ),
    pytest.param(
        SGD(momentum_buffer=True, nesterov=True),
        {"lr": 0.02, "momentum": 0.5, "weight_decay": 1e-2},
        ("lr", "momentum", "weight_decay"),
        id="sgd-nesterov",
    ),
    pytest.param(
        Adam(),
        {"lr": 0.003, "weight_decay": 1e-2, "eps": 1e-3},
        ("lr", "beta1", "beta2", "eps", "weight_decay"),
        id="adam",
    ),
    pytest.param(
        AdamW(),
        {"lr": 0.003, "eps": 1e-3},
        ("lr", "beta1", "beta2", "eps", "weight_decay"),
        id="adamw",
    ),
]


def _agreement(rule: UpdateRule, hparams: dict[str, float], names: tuple[str, ...], t: int) -> None:
    args = (_loss, _start(), _batches(t), _meta)
    kw: dict[str, Any] = {"rule": rule, "hparams": hparams, "hypergradients_of": names}
    forward = hypergradients(*args, **kw)
    backprop = hypergradients(*args, method="backprop", **kw)
    fd = hypergradients(*args, method="finite-difference", fd_step=1e-5, **kw)
    # ε ~ 1e-3 moves the loss by ~1e-5 of itself: a pair 1e-5·ε wide sees only rounding,
    # so ε's reference is Richardson's extrapolation of two wide pairs (error O(h⁴))
    fd_eps = 0.0
    if "eps" in names:
        wide = {**kw, "hypergradients_of": ("eps",), "method": "finite-difference"}
        coarse = hypergradients(*args, fd_step=1e-3, **wide).gradients["eps"]
        fine = hypergradients(*args, fd_step=5e-4, **wide).gradients["eps"]
        assert isinstance(coarse, float) and isinstance(fine, float)
        fd_eps = (4 * fine - coarse) / 3
    assert forward.value == pytest.approx(backprop.value, rel=1e-13)
    for name in names:
        d = fd_eps if name == "eps" else fd.gradients[name]
        f, b = forward.gradients[name], backprop.gradients[name]
        assert isinstance(f, float) and isinstance(b, float) and isinstance(d, float)
        assert f != 0.0
        assert abs(f - b) <= 1e-10 * abs(b), (name, f, b)
        assert abs(f - d) <= 1e-5 * abs(d), (name, f, d)


@pytest.mark.parametrize(("rule", "hparams", "names"), EXACTNESS)
def test_every_hypergradient_agrees_with_reverse_mode_and_differences(
    rule: UpdateRule, hparams: dict[str, float], names: tuple[str, ...]
) -> None:
    """Forward mode = reverse mode (1e-10) = central differences (1e-5), t = 100, float64."""
    _agreement(rule, hparams, names, 100)


@pytest.mark.slow
@pytest.mark.parametrize(("rule", "hparams", "names"), EXACTNESS)
def test_every_hypergradient_agrees_at_t_1000(
    rule: UpdateRule, hparams: dict[str, float], names: tuple[str, ...]
) -> None:
    """The issue's target: the same agreement at t = 1000."""
    _agreement(rule, hparams, names, 1000)


def test_amsgrad_forward_equals_reverse_mode() -> None:
    """AMSGrad's running maximum is piecewise smooth (central differences straddle its
    kinks): forward mode is checked against reverse mode, which differentiates the same
    branch, at 1e-10."""
    args = (_loss, _start(), _batches(100), _meta)
    names = ("lr", "beta1", "beta2", "eps", "weight_decay")
    kw: dict[str, Any] = {"rule": AdamW(amsgrad=True), "hparams": {"lr": 0.003}}
    forward = hypergradients(*args, hypergradients_of=names, **kw)
    backprop = hypergradients(*args, hypergradients_of=names, method="backprop", **kw)
    for name in names:
        assert forward.gradients[name] == pytest.approx(backprop.gradients[name], rel=1e-10)


def test_per_group_step_sizes_forward_backprop_differences() -> None:
    """Per-layer step sizes: one derivative per group, the three methods agree."""
    args = (_loss, _start(), _batches(60), _meta)
    kw: dict[str, Any] = {
        "rule": SGD(momentum_buffer=True),
        "hparams": {"lr": [0.05, 0.02], "momentum": 0.5},
        "groups": [0, 0, 1],
        "hypergradients_of": ("lr", "momentum"),
    }
    results = [
        hypergradients(*args, method=m, fd_step=1e-5, **kw)
        for m in ("forward", "backprop", "finite-difference")
    ]
    forward, backprop, fd = (r.gradients for r in results)
    assert isinstance(forward["lr"], list) and len(forward["lr"]) == 2
    assert isinstance(forward["momentum"], float)
    for f, b, d in zip(forward["lr"], backprop["lr"], fd["lr"], strict=True):  # type: ignore[arg-type]
        assert f == pytest.approx(b, rel=1e-10)
        assert f == pytest.approx(d, rel=1e-5)
    # equal per-group values are one shared hyperparameter: one derivative, the sum of the
    # per-group ones (checked against the two groups moved together by differences)
    shared = hypergradients(*args, **{**kw, "hparams": {"lr": [0.05, 0.05], "momentum": 0.5}})
    assert isinstance(shared.gradients["lr"], float)
    both = hypergradients(
        *args,
        method="finite-difference",
        fd_step=1e-5,
        **{**kw, "hparams": {"lr": 0.05, "momentum": 0.5}},
    )
    assert shared.gradients["lr"] == pytest.approx(both.gradients["lr"], rel=1e-5)


def test_sgd_hypergradient_is_the_one_name_case() -> None:
    """The scalar API returns what the vector API returns for {"lr"}."""
    args = (_loss, _start(), _batches(30))
    scalar = sgd_hypergradient(*args, 0.05, _meta)
    vector = hypergradients(*args, _meta, hparams={"lr": 0.05})
    assert scalar.gradient == vector.gradients["lr"]
    assert scalar.value == vector.value


# ---------------------------------------------------------- the drop-in optimizers' tangents
def _train_to_hypergradients(
    opt: HypergradOptimizer, params: Sequence[Tensor], batches: list[Tensor]
) -> dict[str, float | list[float]]:
    for rows in batches:
        opt.zero_grad()
        _loss((params[0], params[1], params[2]), rows).backward(create_graph=True)
        opt.step()
    return opt.hypergradients(_meta((params[0], params[1], params[2])))


def _drop_in_vs_functional(
    opt_class: type[HypergradOptimizer],
    rule: UpdateRule,
    kwargs: dict[str, Any],
    hparams: dict[str, float],
    names: tuple[str, ...],
) -> None:
    start = _start()
    params = [nn.Parameter(p.clone()) for p in start]
    opt = opt_class(params, hypergradients_of=names, **kwargs)
    batches = _batches(40)
    got = _train_to_hypergradients(opt, params, batches)
    ref = hypergradients(
        _loss, start, batches, _meta, rule=rule, hparams=hparams, hypergradients_of=names
    )
    for name in names:
        assert got[name] == pytest.approx(ref.gradients[name], rel=1e-10), name


def test_drop_in_sgd_tangents_equal_the_functional_engine() -> None:
    hp = {"lr": 0.02, "momentum": 0.5, "weight_decay": 1e-2}
    _drop_in_vs_functional(
        HypergradSGD,
        SGD(momentum_buffer=True, nesterov=True),
        {**hp, "nesterov": True},
        hp,
        ("lr", "momentum", "weight_decay"),
    )


def test_drop_in_adamw_tangents_equal_the_functional_engine() -> None:
    _drop_in_vs_functional(
        HypergradAdamW,
        AdamW(),
        {"lr": 0.003, "betas": (0.8, 0.95), "weight_decay": 0.05},
        {"lr": 0.003, "beta1": 0.8, "beta2": 0.95, "weight_decay": 0.05},
        ("lr", "beta1", "beta2", "weight_decay"),
    )


def test_drop_in_per_group_step_sizes() -> None:
    """Per-layer lr in parameter groups: a list of per-group hypergradients, equal to the
    functional engine's and to central differences of a torch.optim.SGD run."""
    start = _start()
    params = [nn.Parameter(p.clone()) for p in start]
    lrs = [0.05, 0.02]
    opt = HypergradSGD(
        [{"params": params[:2], "lr": lrs[0]}, {"params": params[2:], "lr": lrs[1]}],
        momentum=0.5,
    )
    batches = _batches(40)
    got = _train_to_hypergradients(opt, params, batches)
    assert set(got) == {"lr", "momentum"}
    per_group = got["lr"]
    assert isinstance(per_group, list) and len(per_group) == 2
    with pytest.raises(ValueError, match="per group"):
        opt.hypergradient(_meta((params[0], params[1], params[2])))

    def meta_after(group_lrs: list[float]) -> float:
        ps = [nn.Parameter(p.clone()) for p in start]
        ref = torch.optim.SGD(
            [{"params": ps[:2], "lr": group_lrs[0]}, {"params": ps[2:], "lr": group_lrs[1]}],
            momentum=0.5,
        )
        for rows in batches:
            ref.zero_grad()
            _loss((ps[0], ps[1], ps[2]), rows).backward()
            ref.step()
        return float(_meta((ps[0], ps[1], ps[2])).detach())

    for group in range(2):
        h = 1e-6 * lrs[group]
        up = [lr + (h if i == group else 0.0) for i, lr in enumerate(lrs)]
        down = [lr - (h if i == group else 0.0) for i, lr in enumerate(lrs)]
        expected = (meta_after(up) - meta_after(down)) / (2 * h)
        assert per_group[group] == pytest.approx(expected, rel=1e-5)


def test_drop_in_lr_scheduler_gives_the_base_lr_derivative() -> None:
    """With a torch LR scheduler the lr hypergradient is d/d(base lr) of the scheduled run."""
    start = _start()
    batches = _batches(40)

    def run(base: float, hyper: bool) -> tuple[float, HypergradOptimizer | None]:
        params = [nn.Parameter(p.clone()) for p in start]
        opt: Optimizer
        opt = HypergradAdam(params, lr=base) if hyper else torch.optim.Adam(params, lr=base)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 10) * 0.97**k)
        for rows in batches:
            opt.zero_grad()
            _loss((params[0], params[1], params[2]), rows).backward(create_graph=hyper)
            opt.step()
            sched.step()
        meta = _meta((params[0], params[1], params[2]))
        if hyper:
            assert isinstance(opt, HypergradOptimizer)
            return float(opt.hypergradient(meta)), opt
        return meta.item(), None

    got, _ = run(0.01, True)
    h = 1e-6 * 0.01
    expected = (run(0.01 + h, False)[0] - run(0.01 - h, False)[0]) / (2 * h)
    assert got == pytest.approx(expected, rel=1e-5)


def test_default_hypergradients_of() -> None:
    """lr, plus momentum and weight decay when set non-zero (AdamW's default decay counts)."""
    model, _, _ = _classifier(F64)
    assert HypergradSGD(model.parameters(), lr=0.1).hypergradient_names == ("lr",)
    assert HypergradSGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4
    ).hypergradient_names == ("lr", "momentum", "weight_decay")
    assert HypergradAdam(model.parameters()).hypergradient_names == ("lr",)
    assert HypergradAdamW(model.parameters()).hypergradient_names == ("lr", "weight_decay")


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "adjoint"}, "method"),
        ({"hparams": {"learning_rate": 0.1}}, "learning_rate"),
        ({"hparams": {"lr": -0.1}}, "lr"),
        ({"hparams": {"lr": math.nan}}, "lr"),
        ({"hparams": {"lr": [0.1, 0.2]}}, "hparams"),
        ({"groups": [0, 1]}, "groups"),
        ({"groups": [0, -1, 0]}, "groups"),
        ({"hypergradients_of": ("beta1",)}, "hypergradients_of"),
        ({"hypergradients_of": ("momentum",)}, "momentum_buffer"),
        ({"rule": torch.optim.SGD}, "rule"),
        ({"rule": Adam(), "hparams": {"beta1": 1.0}}, "beta1"),
        ({"fd_step": 2.0}, "fd_step"),
    ],
)
def test_functional_bad_input(kwargs: dict[str, Any], match: str) -> None:
    call: Callable[..., Any] = hypergradients
    with pytest.raises(ValueError, match=match):
        call(_loss, _start(), _batches(3), _meta, **kwargs)


class _ListAdamW(AdamW):
    """AdamW declared non-elementwise: its tangents take the per-direction path."""

    elementwise = False


def test_elementwise_batching_equals_the_per_direction_path() -> None:
    """Concatenated, direction-batched tangents (elementwise rules) = one pass per direction."""
    args = (_loss, _start(), _batches(30), _meta)
    names = ("lr", "beta1", "weight_decay")
    kw: dict[str, Any] = {"hparams": {"lr": 0.003}, "hypergradients_of": names}
    batched = hypergradients(*args, rule=AdamW(), **kw)
    looped = hypergradients(*args, rule=_ListAdamW(), **kw)
    for name in names:
        assert batched.gradients[name] == pytest.approx(looped.gradients[name], rel=1e-12)


def _loss_sometimes_without_bias(p: Sequence[Tensor], rows: Tensor, k: int) -> Tensor:
    """Every third step the model runs without its hidden bias (a branch the loss skips)."""
    if k % 3 == 0:
        return ((torch.tanh(_X[rows] @ p[0]) @ p[2] - _Y[rows]) ** 2).mean()
    return _loss((p[0], p[1], p[2]), rows)


def test_parameters_skipping_steps_keep_their_own_step_count() -> None:
    """A tensor the loss does not use at some steps gets no gradient there (torch.optim skips
    it, its Adam step count lags): the weights still equal torch.optim.Adam's and the
    hypergradient equals autograd through the same run written out."""
    start = _start()
    batches = _batches(12)
    ours = [nn.Parameter(p.clone()) for p in start]
    theirs = [nn.Parameter(p.clone()) for p in start]
    opt = HypergradAdam(ours, lr=0.01)
    ref = torch.optim.Adam(theirs, lr=0.01)
    for k, rows in enumerate(batches):
        for params, o, graph in ((ours, opt, True), (theirs, ref, False)):
            o.zero_grad(set_to_none=True)
            _loss_sometimes_without_bias(params, rows, k).backward(create_graph=graph)
            o.step()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    assert int(opt.state[ours[1]]["step"]) == 8 and int(opt.state[ours[0]]["step"]) == 12

    lr = torch.tensor(0.01, dtype=F64, requires_grad=True)
    unrolled: list[Tensor] = [p.clone().requires_grad_(True) for p in start]
    m = [torch.zeros_like(p) for p in start]
    v = [torch.zeros_like(p) for p in start]
    count = [0, 0, 0]
    for k, rows in enumerate(batches):
        loss = _loss_sometimes_without_bias(unrolled, rows, k)
        grads = torch.autograd.grad(loss, unrolled, create_graph=True, allow_unused=True)
        for i, g in enumerate(grads):
            if g is None:
                continue
            count[i] += 1
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g**2
            denom = (v[i].sqrt() / math.sqrt(1 - 0.999 ** count[i])) + 1e-8
            unrolled[i] = unrolled[i] - lr / (1 - 0.9 ** count[i]) * m[i] / denom
    (expected,) = torch.autograd.grad(_meta((unrolled[0], unrolled[1], unrolled[2])), lr)
    got = opt.hypergradient(_meta((ours[0], ours[1], ours[2])))
    assert got == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("method", ["forward", "backprop"])
def test_adam_elements_whose_gradient_is_always_zero_give_finite_hypergradients(
    amsgrad: bool, method: str
) -> None:
    """An input feature that is 0 in every sample leaves its weights' second moment at 0:
    √v has no derivative there, yet the hypergradient is finite and equals the one of the
    same run without that feature (regression: it was NaN)."""
    x_zero = _X.clone()
    x_zero[:, 0] = 0.0
    start = _start()

    def loss(p: tuple[Tensor, Tensor, Tensor], rows: Tensor) -> Tensor:
        return ((torch.tanh(x_zero[rows] @ p[0] + p[1]) @ p[2] - _Y[rows]) ** 2).mean()

    def meta(p: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        x_val = _XV.clone()
        x_val[:, 0] = 0.0
        return ((torch.tanh(x_val @ p[0] + p[1]) @ p[2] - _YV) ** 2).mean()

    names = ("lr", "beta2", "eps", "weight_decay")
    got = hypergradients(
        loss, start, _batches(20), meta, rule=AdamW(amsgrad=amsgrad), hypergradients_of=names,
        hparams={"lr": 0.01}, method=method,
    )  # fmt: skip

    def meta_without(p: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return meta((torch.cat([start[0][:1], p[0]]), p[1], p[2]))

    rest = (start[0][1:], start[1], start[2])
    ref = hypergradients(
        lambda p, rows: loss((torch.cat([start[0][:1], p[0]]), p[1], p[2]), rows), rest,
        _batches(20), meta_without, rule=AdamW(amsgrad=amsgrad), hypergradients_of=names,
        hparams={"lr": 0.01}, method="backprop",
    )  # fmt: skip
    for name in names:
        value = got.gradients[name]
        assert isinstance(value, float) and math.isfinite(value), name
    # the zero-gradient row only decays (AdamW): its effect on the meta-loss is nil
    for name in names:
        assert got.gradients[name] == pytest.approx(ref.gradients[name], rel=1e-10), name


def test_a_diverged_run_warns_and_returns_non_finite() -> None:
    """SGD at a step size far past stability: the hypergradient is not finite, with a warning
    naming the hyperparameter (never a silent NaN)."""
    with pytest.warns(RuntimeWarning, match=r"non-finite hypergradient for \['lr'\]"):
        result = hypergradients(_loss, _start(), _batches(300), _meta, hparams={"lr": 1e3})
    gradient = result.gradients["lr"]
    assert isinstance(gradient, float) and not math.isfinite(gradient)


# ------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("decay", ["cosine", "linear", "exponential"])
@pytest.mark.parametrize(
    ("inner", "hparams"),
    [
        pytest.param(SGD(momentum_buffer=True), {"lr": 0.05, "momentum": 0.5}, id="sgd-momentum"),
        pytest.param(AdamW(), {"lr": 0.01}, id="adamw"),
    ],
)
def test_schedule_fractions_are_differentiable(
    decay: str, inner: UpdateRule, hparams: dict[str, float]
) -> None:
    """Warmup fraction and final fraction of a scheduled step size: forward mode = reverse
    mode (1e-10) = central differences (1e-5), with lr, over the schedule's 100 steps."""
    t = 100
    rule = Scheduled(inner, t, decay=decay)
    names = ("lr", "warmup_fraction", "final_fraction")
    hp = {**hparams, "warmup_fraction": 0.1234, "final_fraction": 0.05}
    args = (_loss, _start(), _batches(t), _meta)
    kw: dict[str, Any] = {"rule": rule, "hparams": hp, "hypergradients_of": names}
    forward = hypergradients(*args, **kw)
    backprop = hypergradients(*args, method="backprop", **kw)
    fd = hypergradients(*args, method="finite-difference", fd_step=1e-6, **kw)
    for name in names:
        f, b, d = (r.gradients[name] for r in (forward, backprop, fd))
        assert isinstance(f, float) and isinstance(b, float) and isinstance(d, float)
        assert f == pytest.approx(b, rel=1e-10), name
        assert f == pytest.approx(d, rel=1e-5), name


def test_scheduled_run_equals_torch_lambda_lr() -> None:
    """The scheduled rule's run is torch.optim.SGD under LambdaLR with the same factor."""
    t = 40
    rule = Scheduled(SGD(momentum_buffer=True), t, decay="cosine")
    hp = {"lr": 0.05, "momentum": 0.9, "warmup_fraction": 0.2, "final_fraction": 0.1}
    ours = hypergradients(_loss, _start(), _batches(t), _meta, rule=rule, hparams=hp)
    params = [nn.Parameter(p.clone()) for p in _start()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: rule.factor(k, 0.2, 0.1))
    for rows in _batches(t):
        opt.zero_grad()
        _loss((params[0], params[1], params[2]), rows).backward()
        opt.step()
        sched.step()
    for p, q in zip(ours.params, params, strict=True):
        assert torch.equal(p, q.detach())


def test_schedule_bad_input() -> None:
    with pytest.raises(ValueError, match="horizon"):
        Scheduled(SGD(), 0)
    with pytest.raises(ValueError, match="decay"):
        Scheduled(SGD(), 10, decay="step")
    with pytest.raises(ValueError, match="rule"):
        Scheduled(Scheduled(SGD(), 10), 10)
    with pytest.raises(ValueError, match="warmup_fraction"):
        hypergradients(
            _loss, _start(), _batches(3), _meta, rule=Scheduled(SGD(), 3),
            hparams={"lr": 0.1, "warmup_fraction": 1.0},
        )  # fmt: skip
    with pytest.raises(ValueError, match="final_fraction"):
        hypergradients(
            _loss, _start(), _batches(3), _meta, rule=Scheduled(SGD(), 3, decay="exponential"),
            hparams={"lr": 0.1, "final_fraction": 0.0},
        )  # fmt: skip


# ------------------------------------------------------------------------- checkpointing
@pytest.mark.parametrize("every", [1, 7, 30, 1000])
def test_checkpointed_reverse_mode_equals_reverse_mode(every: int) -> None:
    """Reverse mode keeping the graph of ``every`` steps at a time (segments recomputed in the
    backward pass) gives reverse mode's value and hypergradients to 1e-12 (momentum state
    carried across segments; a last, shorter segment; a segment longer than the run)."""
    args = (_loss, _start(), _batches(30), _meta)
    kw: dict[str, Any] = {
        "rule": AdamW(),
        "hparams": {"lr": 0.01},
        "hypergradients_of": ("lr", "beta1", "weight_decay"),
        "method": "backprop",
    }
    plain = hypergradients(*args, **kw)
    segmented = hypergradients(*args, checkpoint_every=every, **kw)
    assert segmented.value == pytest.approx(plain.value, rel=1e-14)
    for name in ("lr", "beta1", "weight_decay"):
        assert segmented.gradients[name] == pytest.approx(plain.gradients[name], rel=1e-12)


@pytest.mark.parametrize(("every", "method"), [(0, "backprop"), (2.5, "backprop"), (5, "forward")])
def test_checkpoint_every_bad_input(every: Any, method: str) -> None:
    with pytest.raises(ValueError, match="checkpoint_every"):
        hypergradients(_loss, _start(), _batches(3), _meta, method=method, checkpoint_every=every)


@pytest.mark.parametrize("rule", [Adam(), AdamW(), Adam(amsgrad=True)])
def test_an_unmoved_group_with_a_zero_second_moment_keeps_a_finite_tangent(
    rule: UpdateRule,
) -> None:
    """A group that no direction seeds (another layer's step size is differentiated) runs
    its hyperparameters on the float path; its tangent still moves through the Hessian,
    and where its second moment is exactly 0 the tangent must stay finite (regression:
    the float path's plain sqrt gave 0/0 there)."""
    from l2l_tune.hypergrad.tangent import Direction, tangent_step, zero_tangents

    params = [torch.ones(4, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    grads = [torch.tensor([1.0, 0.0, 2.0, 0.0], dtype=torch.float64), torch.ones(3).double()]
    states = rule.init(params)
    hparams = [rule.defaults(lr=0.1), rule.defaults(lr=0.2)]
    directions = [Direction("lr", 1)]  # moves group 1 only
    tangents = zero_tangents(params, states, 1)
    hvps = [torch.full((1, 4), 0.5, dtype=torch.float64), torch.ones((1, 3)).double()]
    _, _, new = tangent_step(
        rule, [0, 1], hparams, params, grads, states, [0, 0], directions, tangents, hvps
    )
    for tangent in new:
        for x in tangent:
            assert torch.isfinite(x).all(), tangent
    assert new[0][0].abs().sum() > 0  # group 0 moved through its Hessian term
