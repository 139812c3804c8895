"""The MLP optimizer of Metz et al. (2019), as the paper's Section 5 meta-trains it.

Per parameter element the optimizer keeps five momenta and five second moments,

    m_i ← β_i m_i + (1 − β_i) g,    r_i ← β_i r_i + (1 − β_i) g²,
    β = (0.5, 0.9, 0.99, 0.999, 0.9999)   (no bias correction),

updated before the features are formed. Its 31 input features are 22 value
columns — ``g``, ``m_i·rsqrt(r_i + 1e-6)`` (5), ``θ``, ``m_i`` (5), ``r_i`` (5),
``rsqrt(r_i + 1e-6)`` (5) — each normalised over its parameter tensor as
``x·rsqrt(1e-5 + mean(x²))``, and 9 time features ``tanh(k/τ − 1)`` for the step
counter ``k`` (starting at 1) and ``τ ∈ {3, 10, 30, 100, 300, 1000, 3000, 10000,
300000}``. A 31 → 32 (ReLU) → 2 perceptron maps them to ``(d, mag)`` and the
parameter moves by

    θ ← θ − 0.001 · d · exp(0.001 · mag).

Its weights start as N(0, 1) and its biases at 0.1 (the authors' code), or, with
``init="fan-in"``, as N(0, 1/fan_in) with biases 0 (the scale of the default layers of
Metz et al.'s released MLP optimizer, Haiku's; see :data:`META_INITS`). The
functions here are pure and differentiable in the meta-parameters (what
meta-training differentiates); :class:`MLPOptimizer` is the same step as a
``torch.optim.Optimizer`` for a user's loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._validation import check_choice
from ..hypergrad.rules import Hyperparameters, TensorState, UpdateRule

__all__ = [
    "BETAS",
    "HIDDEN",
    "META_INITS",
    "N_FEATURES",
    "TIMESCALES",
    "LearnedRule",
    "LearnedState",
    "MLPOptimizer",
    "MetaParameters",
    "features",
    "init_state",
    "learned_step",
    "update_moments",
]

#: Decay rates of the five momenta and second moments.
BETAS: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
#: Timescales of the nine time features ``tanh(k/τ − 1)``.
TIMESCALES: tuple[float, ...] = (3, 10, 30, 100, 300, 1000, 3000, 10000, 300000)
#: 22 value features and 9 time features.
N_FEATURES = 31
#: Width of the hidden layer.
HIDDEN = 32
#: The update's scale on the direction and on the exponent of the magnitude.
STEP_SCALE = 1e-3
_RSQRT_EPS = 1e-6
_NORM_EPS = 1e-5

#: Initialisations of :meth:`MetaParameters.initial`: ``"authors"`` (weights N(0, 1),
#: biases 0.1: the paper's code) and ``"fan-in"`` (weights N(0, 1/fan_in), biases 0).
#: With normalised features the authors' start moves every parameter by about 0.02 per
#: step in directions unrelated to its gradient; the fan-in start by about 0.001.
META_INITS = ("authors", "fan-in")


@dataclass(frozen=True)
class MetaParameters:
    """The perceptron's weights: ``31 → 32`` (ReLU) ``→ 2``.

    Attributes:
        w1: ``(31, 32)``.
        b1: ``(32,)``.
        w2: ``(32, 2)``.
        b2: ``(2,)``.
    """

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor

    def __post_init__(self) -> None:
        shapes = {"w1": (N_FEATURES, HIDDEN), "b1": (HIDDEN,), "w2": (HIDDEN, 2), "b2": (2,)}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"{name} must be a tensor of shape {shape}, got {got}")
            if not value.is_floating_point():
                raise ValueError(f"{name} must be a floating tensor, got {value.dtype}")

    @classmethod
    def initial(
        cls,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        init: str = "authors",
    ) -> MetaParameters:
        """Initial meta-parameters.

        Args:
            generator: Random generator of the weights.
            dtype: Floating dtype of the tensors.
            device: Their device.
            init: ``"authors"``: weights N(0, 1), biases 0.1 (the paper's code);
                ``"fan-in"``: weights N(0, 1/fan_in), biases 0 (:data:`META_INITS`).
                Both draw the same normal numbers from ``generator``.

        Raises:
            ValueError: for another ``init``.
        """
        fan_in = check_choice(init, "init", META_INITS) == "fan-in"
        bias = 0.0 if fan_in else 0.1

        def normal(*shape: int) -> Tensor:
            weights = torch.randn(*shape, generator=generator, dtype=dtype)
            return (weights / math.sqrt(shape[0]) if fan_in else weights).to(device)

        return cls(
            normal(N_FEATURES, HIDDEN),
            torch.full((HIDDEN,), bias, dtype=dtype, device=device),
            normal(HIDDEN, 2),
            torch.full((2,), bias, dtype=dtype, device=device),
        )

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(w1, b1, w2, b2)``."""
        return self.w1, self.b1, self.w2, self.b2

    def requires_grad_(self, requires_grad: bool = True) -> MetaParameters:
        """Mark every tensor as a leaf to differentiate in (in place); returns ``self``."""
        for tensor in self.tensors():
            tensor.requires_grad_(requires_grad)
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """The tensors by name, detached."""
        return {name: getattr(self, name).detach().clone() for name in ("w1", "b1", "w2", "b2")}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> MetaParameters:
        """Inverse of :meth:`state_dict`.

        Raises:
            ValueError: for a missing name or a tensor of the wrong shape.
        """
        missing = [n for n in ("w1", "b1", "w2", "b2") if n not in state]
        if missing:
            raise ValueError(f"meta-parameters need w1, b1, w2, b2; missing {missing}")
        return cls(state["w1"], state["b1"], state["w2"], state["b2"])

    def save(self, path: str | Path) -> None:
        """Write the tensors to ``path`` (``torch.save``)."""
        torch.save(self.state_dict(), Path(path))

    @classmethod
    def load(cls, path: str | Path, *, map_location: Any = None) -> MetaParameters:
        """Read what :meth:`save` wrote (tensors only: ``weights_only=True``)."""
        state = torch.load(Path(path), map_location=map_location, weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"{path} does not hold MLP-optimizer meta-parameters")
        return cls.from_state_dict(state)


@dataclass(frozen=True)
class LearnedState:
    """One parameter tensor's optimizer state.

    Attributes:
        m: The five momenta, ``(5, *param.shape)``.
        r: The five second moments, ``(5, *param.shape)``.
        step: Steps taken so far (the next step's counter is ``step + 1``).
    """

    m: Tensor
    r: Tensor
    step: int


def init_state(param: Tensor) -> LearnedState:
    """Zero moments for ``param``."""
    zeros = torch.zeros((len(BETAS), *param.shape), dtype=param.dtype, device=param.device)
    return LearnedState(zeros, zeros.clone(), 0)


def _betas(like: Tensor) -> Tensor:
    return torch.tensor(BETAS, dtype=like.dtype, device=like.device).view(
        -1, *([1] * (like.dim() - 1))
    )


def update_moments(grad: Tensor, state: LearnedState) -> LearnedState:
    """``m_i ← β_i m_i + (1 − β_i) g``, ``r_i ← β_i r_i + (1 − β_i) g²``; the counter + 1."""
    beta = _betas(state.m)
    m = beta * state.m + (1.0 - beta) * grad.unsqueeze(0)
    r = beta * state.r + (1.0 - beta) * (grad * grad).unsqueeze(0)
    return LearnedState(m, r, state.step + 1)


def _normalised(x: Tensor, batch_dims: int) -> Tensor:
    """``x·rsqrt(1e-5 + mean(x²))``, the mean over every dimension after ``batch_dims``."""
    dims = tuple(range(batch_dims, x.dim()))
    return x * torch.rsqrt(_NORM_EPS + (x * x).mean(dim=dims, keepdim=True))


def features(param: Tensor, grad: Tensor, state: LearnedState, *, batch_dims: int = 0) -> Tensor:
    """The 31 features of every element of ``param``, shape ``(*param.shape, 31)``.

    Args:
        param: ``θ``.
        grad: ``g``, the gradient at ``θ``.
        state: The state *after* :func:`update_moments` with ``grad``.
        batch_dims: Leading dimensions of ``param`` that index separate problems
            (each normalised on its own); 0 for one parameter tensor.
    """
    rsqrt = torch.rsqrt(state.r + _RSQRT_EPS)
    columns = [
        grad.unsqueeze(0),
        state.m * rsqrt,
        param.unsqueeze(0),
        state.m,
        state.r,
        rsqrt,
    ]
    values = torch.cat(columns, dim=0)  # (22, *param.shape)
    values = _normalised(values.movedim(0, batch_dims), batch_dims + 1).movedim(batch_dims, 0)
    k = float(state.step)
    time = torch.tensor(
        [math.tanh(k / tau - 1.0) for tau in TIMESCALES], dtype=param.dtype, device=param.device
    )
    time = time.view(-1, *([1] * param.dim())).expand(len(TIMESCALES), *param.shape)
    return torch.cat([values, time], dim=0).movedim(0, -1)


def learned_step(
    meta: MetaParameters,
    param: Tensor,
    grad: Tensor,
    state: LearnedState,
    *,
    batch_dims: int = 0,
) -> tuple[Tensor, LearnedState]:
    """One step of the MLP optimizer: ``(θ − 0.001·d·exp(0.001·mag), new state)``.

    Differentiable in ``meta`` (and in ``param``, ``grad`` and the state): the
    meta-gradient of truncated backprop flows through it.
    """
    state = update_moments(grad, state)
    x = features(param, grad, state, batch_dims=batch_dims)
    hidden = torch.relu(x @ meta.w1 + meta.b1)
    out = hidden @ meta.w2 + meta.b2
    direction, magnitude = out[..., 0], out[..., 1]
    return param - STEP_SCALE * direction * torch.exp(STEP_SCALE * magnitude), state


class LearnedRule(UpdateRule):
    """The learned optimizer as an inner update rule of :mod:`l2l_tune.hypergrad.rules`.

    With it the tasks run the learned optimizer as they run SGD or Adam (the same
    mini-batch orders, divergence rule and accuracy curves)::

        batch = MNIST("digits").sample(5, 1000, init="paper", optimizer=LearnedRule(meta))
        evaluation = batch.evaluate(None, 4000, eval_every=100)

    It has no continuous hyperparameters (nothing to tune or differentiate: its
    meta-parameters are trained by :func:`~l2l_tune.learned.meta_train`). Its state
    per tensor is the five momenta and the five second moments, each shaped like the
    tensor (the tasks freeze a diverged problem's state row by row); the step counter
    is the rule's ``step + 1``.

    Args:
        meta: The meta-parameters (moved to each parameter's dtype and device).
        batch_dims: Leading dimensions of every parameter that index separate
            problems, each normalised on its own (1: the tasks' stacked ``(m, ...)``
            layout; 0: one network).

    Raises:
        ValueError: for meta-parameters of the wrong type or ``batch_dims`` not 0 or 1.
    """

    hyperparameters: Mapping[str, float] = {}
    elementwise = False

    def __init__(self, meta: MetaParameters, *, batch_dims: int = 1) -> None:
        if not isinstance(meta, MetaParameters):
            raise ValueError(f"meta must be MetaParameters, got {type(meta).__name__}")
        if isinstance(batch_dims, bool) or batch_dims not in (0, 1):
            raise ValueError(f"batch_dims must be 0 or 1, got {batch_dims!r}")
        self.meta = MetaParameters(*(t.detach() for t in meta.tensors()))
        self.batch_dims = batch_dims
        self._cache: dict[tuple[torch.dtype, torch.device], MetaParameters] = {}

    def meta_like(self, param: Tensor) -> MetaParameters:
        """The meta-parameters in ``param``'s dtype and on its device (converted once)."""
        key = (param.dtype, param.device)
        if key not in self._cache:
            self._cache[key] = MetaParameters(
                *(t.to(dtype=param.dtype, device=param.device) for t in self.meta.tensors())
            )
        return self._cache[key]

    def init_one(self, param: Tensor) -> TensorState:
        """The five momenta then the five second moments, each shaped like ``param``."""
        state = init_state(param)
        return (*state.m.unbind(0), *state.r.unbind(0))

    def update_one(
        self, param: Tensor, grad: Tensor, state: TensorState, hparams: Hyperparameters, step: int
    ) -> tuple[Tensor, TensorState]:
        """:func:`learned_step` of one (stacked) tensor; ``step`` steps were taken before."""
        n = len(BETAS)
        moments = LearnedState(torch.stack(state[:n]), torch.stack(state[n:]), step)
        new_param, new_state = learned_step(
            self.meta_like(param), param, grad, moments, batch_dims=self.batch_dims
        )
        return new_param, (*new_state.m.unbind(0), *new_state.r.unbind(0))


class MLPOptimizer(torch.optim.Optimizer):
    """The learned optimizer as a ``torch.optim.Optimizer``: ``opt.step()`` after ``backward()``.

    ::

        opt = MLPOptimizer(model.parameters(), MetaParameters.load("mlp_opt.pt"))
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

    Args:
        params: The parameters (or parameter groups) to train.
        meta_parameters: The perceptron's weights (a :class:`MetaParameters`, or a path
            written by :meth:`MetaParameters.save`); moved to each parameter's dtype
            and device.

    Raises:
        ValueError: for meta-parameters of the wrong type or shape.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        meta_parameters: MetaParameters | str | Path,
    ) -> None:
        if isinstance(meta_parameters, str | Path):
            meta_parameters = MetaParameters.load(meta_parameters)
        if not isinstance(meta_parameters, MetaParameters):
            raise ValueError(
                "meta_parameters must be MetaParameters or a path to saved ones, got "
                f"{type(meta_parameters).__name__}"
            )
        self.meta_parameters = meta_parameters
        super().__init__(params, {})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """Move every parameter with a gradient by the learned update."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rule = LearnedRule(self.meta_parameters, batch_dims=0)  # one conversion per dtype
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                stored = self.state[param]
                state = stored.get("learned") or init_state(param)
                new_param, new_state = learned_step(rule.meta_like(param), param, param.grad, state)
                param.copy_(new_param)
                stored["learned"] = new_state
        return loss
