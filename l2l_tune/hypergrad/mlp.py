"""A batch of ReLU perceptrons with closed-form gradients and Hessian-vector products.

``m`` independent networks (one per task) are stored as stacked weights
``W_l ∈ R^{m×d_l×d_{l+1}}`` and trained at once with batched matrix products
(``torch.baddbmm``), on CPU or CUDA. For the step-size meta-gradient, forward
mode carries the tangent ``V = ∂w/∂η`` along the SGD run,

    w_{k+1} = w_k − η ∇ℓ_k(w_k),        V_{k+1} = V_k − ∇ℓ_k(w_k) − η ∇²ℓ_k(w_k) V_k,

which needs one Hessian-vector product ``∇²ℓ_k(w_k) V_k`` per step.
:func:`loss_gradient_and_hvp` computes it as the directional derivative of the
hand-written backward pass (forward-over-reverse, derived by hand): two more
products with the ``d_0``-wide input per step besides the two a gradient step
needs, so a forward-mode step costs ≈ 2 plain steps, and memory stays that of
two copies of the weights whatever the number of steps. The functions are plain
differentiable torch code, so reverse mode (autograd through the unrolled run)
and ``torch.func`` reference checks run on the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "Params",
    "init_params",
    "logits",
    "loss",
    "loss_and_gradient",
    "loss_gradient_and_hvp",
    "loss_gradient_and_hvps",
    "loss_and_directional_derivative",
    "loss_and_directional_derivatives",
]

#: Weights and biases ``[W_1, b_1, …, W_L, b_L]``, ``W_l`` of shape ``(m, d_l, d_{l+1})``
#: and ``b_l`` of shape ``(m, d_{l+1})``.
Params = list[Tensor]


def init_params(
    sizes: Sequence[int],
    m: int,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    scheme: str = "torch",
) -> Params:
    """``m`` independent initialisations.

    ``scheme="torch"``: weights and biases uniform on ``±1/√fan_in`` (PyTorch's
    default for ``nn.Linear``). ``scheme="paper"``: every tensor, biases included,
    ``N(0, 1)·1.2/√fan_in`` (the authors' code of the learned-optimizer experiments,
    Section 5). Drawn on the CPU from ``generator`` so that a seed gives the same
    networks on every device and dtype.

    Args:
        sizes: Layer widths, input first (e.g. ``(784, 100, 20, 10)``).
        m: Number of networks.
        generator: Source of randomness.
        dtype: Floating dtype of the result.
        device: Device of the result.
        scheme: ``"torch"`` or ``"paper"``.

    Returns:
        ``[W_1, b_1, …]`` as described in :data:`Params`.

    Raises:
        ValueError: for an unknown ``scheme``.
    """
    if scheme not in ("torch", "paper"):
        raise ValueError(f"scheme must be 'torch' or 'paper', got {scheme!r}")
    params: Params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        for shape in ((m, fan_in, fan_out), (m, fan_out)):
            if scheme == "torch":
                unit = torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1
                draw = unit / math.sqrt(fan_in)
            else:
                unit = torch.randn(*shape, generator=generator, dtype=torch.float64)
                draw = unit * (1.2 / math.sqrt(fan_in))
            params.append(draw.to(dtype=dtype, device=device))
    return params


def _forward(params: Params, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Logits ``(m, B, C)``, layer inputs ``h_0 = x, h_1, …`` and ReLU masks."""
    inputs = [x]
    masks: list[Tensor] = []
    h = x
    n_layers = len(params) // 2
    for layer in range(n_layers):
        a = torch.baddbmm(params[2 * layer + 1].unsqueeze(1), h, params[2 * layer])
        if layer == n_layers - 1:
            return a, inputs, masks
        mask = a > 0
        h = a * mask
        masks.append(mask)
        inputs.append(h)
    raise ValueError("params must hold at least one layer")  # pragma: no cover


def logits(params: Params, x: Tensor) -> Tensor:
    """The networks' outputs ``(m, B, C)`` for inputs ``x`` of shape ``(m, B, d_0)``."""
    return _forward(params, x)[0]


def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Per-task mean cross entropy ``(m,)`` (differentiable by autograd)."""
    return _cross_entropy(logits(params, x), y)[0]


def _cross_entropy(out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-task mean cross entropy ``(m,)`` and softmax probabilities ``(m, B, C)``."""
    log_p = torch.log_softmax(out, dim=-1)
    loss = -torch.gather(log_p, -1, y.unsqueeze(-1)).squeeze(-1).mean(dim=-1)
    return loss, torch.exp(log_p)


def _output_gradient(p: Tensor, y: Tensor) -> Tensor:
    """``∂ℓ/∂o = (softmax(o) − onehot(y)) / B``."""
    g = p.clone()
    g.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(y.unsqueeze(-1), -1, dtype=p.dtype))
    return g / y.shape[-1]


def loss_and_gradient(params: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Params]:
    """Per-task mean cross entropy and its gradient (the backward pass by hand).

    Args:
        params: The ``m`` networks.
        x: Inputs ``(m, B, d_0)``.
        y: Labels ``(m, B)`` (int64).

    Returns:
        ``(loss, grads)``: ``loss`` of shape ``(m,)``; ``grads`` shaped like ``params``.
    """
    out, inputs, masks = _forward(params, x)
    loss, p = _cross_entropy(out, y)
    delta = _output_gradient(p, y)
    grads: Params = [torch.empty(0)] * len(params)
    for layer in range(len(params) // 2 - 1, -1, -1):
        grads[2 * layer] = torch.bmm(inputs[layer].transpose(1, 2), delta)
        grads[2 * layer + 1] = delta.sum(dim=1)
        if layer:
            delta = torch.bmm(delta, params[2 * layer].transpose(1, 2)) * masks[layer - 1]
    return loss, grads


def loss_gradient_and_hvp(
    params: Params, tangent: Params, x: Tensor, y: Tensor
) -> tuple[Tensor, Params, Params]:
    """Loss, gradient and Hessian-vector product ``∇²ℓ(w)·V`` in one pass.

    The product is the directional derivative of :func:`loss_and_gradient` along
    ``V = tangent`` (ReLU masks are piecewise constant, so their derivative is 0).

    Args:
        params: The ``m`` networks.
        tangent: The direction ``V``, shaped like ``params``.
        x: Inputs ``(m, B, d_0)``.
        y: Labels ``(m, B)``.

    Returns:
        ``(loss, grads, hvp)``.
    """
    loss, grads, (hvp,) = loss_gradient_and_hvps(params, [tangent], x, y)
    return loss, grads, hvp


def loss_gradient_and_hvps(
    params: Params, tangents: Sequence[Params], x: Tensor, y: Tensor
) -> tuple[Tensor, Params, list[Params]]:
    """Loss, gradient and one Hessian-vector product per direction, sharing one backward pass.

    The forward and backward passes run once; each direction ``V_j`` adds its
    tangent forward pass and the tangent of the backward pass (the directions of
    several hyperparameters, paper Eqn 2 for each).

    Args:
        params: The ``m`` networks.
        tangents: The directions ``V_j``, each shaped like ``params``.
        x: Inputs ``(m, B, d_0)``.
        y: Labels ``(m, B)``.

    Returns:
        ``(loss, grads, [∇²ℓ(w)·V_j for each j])``.
    """
    n_layers = len(params) // 2
    out, inputs, masks = _forward(params, x)
    loss, p = _cross_entropy(out, y)
    delta = _output_gradient(p, y)
    deltas: list[Tensor] = [torch.empty(0)] * n_layers  # ∂ℓ/∂a_l
    grads: Params = [torch.empty(0)] * len(params)
    for layer in range(n_layers - 1, -1, -1):
        deltas[layer] = delta
        grads[2 * layer] = torch.bmm(inputs[layer].transpose(1, 2), delta)
        grads[2 * layer + 1] = delta.sum(dim=1)
        if layer:
            delta = torch.bmm(delta, params[2 * layer].transpose(1, 2)) * masks[layer - 1]
    hvps = [_hvp_from_passes(params, tangent, inputs, masks, p, deltas, y) for tangent in tangents]
    return loss, grads, hvps


def _hvp_from_passes(
    params: Params,
    tangent: Params,
    inputs: list[Tensor],
    masks: list[Tensor],
    p: Tensor,
    deltas: list[Tensor],
    y: Tensor,
) -> Params:
    """``∇²ℓ(w)·V``: the tangent of the forward pass, then of the backward pass."""
    n_layers = len(params) // 2
    # Tangent of the forward pass: ȧ_l = ḣ_{l−1} W_l + h_{l−1} V_l + c_l.
    dots = [torch.zeros_like(inputs[0])]
    dot_out = torch.empty(0)
    for layer in range(n_layers):
        dot_a = torch.baddbmm(
            tangent[2 * layer + 1].unsqueeze(1), inputs[layer], tangent[2 * layer]
        )
        if layer:
            dot_a = dot_a + torch.bmm(dots[layer], params[2 * layer])
        if layer == n_layers - 1:
            dot_out = dot_a
        else:
            dots.append(dot_a * masks[layer])
    # d(softmax)/dη = p ∘ (ȯ − ⟨p, ȯ⟩).
    dot_delta = p * (dot_out - (p * dot_out).sum(dim=-1, keepdim=True)) / y.shape[-1]
    hvp: Params = [torch.empty(0)] * len(params)
    for layer in range(n_layers - 1, -1, -1):
        dot_grad = torch.bmm(inputs[layer].transpose(1, 2), dot_delta)
        if layer:
            dot_grad = dot_grad + torch.bmm(dots[layer].transpose(1, 2), deltas[layer])
        hvp[2 * layer] = dot_grad
        hvp[2 * layer + 1] = dot_delta.sum(dim=1)
        if layer:
            new_dot = torch.bmm(dot_delta, params[2 * layer].transpose(1, 2)) + torch.bmm(
                deltas[layer], tangent[2 * layer].transpose(1, 2)
            )
            dot_delta = new_dot * masks[layer - 1]
    return hvp


def loss_and_directional_derivative(
    params: Params, tangent: Params, x: Tensor, y: Tensor
) -> tuple[Tensor, Tensor]:
    """Per-task loss ``(m,)`` and its derivative along ``tangent`` (forward pass only)."""
    loss, (derivative,) = loss_and_directional_derivatives(params, [tangent], x, y)
    return loss, derivative


def loss_and_directional_derivatives(
    params: Params, tangents: Sequence[Params], x: Tensor, y: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """Per-task loss ``(m,)`` and its derivative ``(m,)`` along each tangent (one forward pass)."""
    n_layers = len(params) // 2
    out, inputs, masks = _forward(params, x)
    loss, p = _cross_entropy(out, y)
    delta = _output_gradient(p, y)
    derivatives = []
    for tangent in tangents:
        dot_h = torch.zeros_like(x)
        for layer in range(n_layers):
            dot_a = torch.baddbmm(
                tangent[2 * layer + 1].unsqueeze(1), inputs[layer], tangent[2 * layer]
            )
            if layer:
                dot_a = dot_a + torch.bmm(dot_h, params[2 * layer])
            dot_h = dot_a * masks[layer] if layer < n_layers - 1 else dot_a
        derivatives.append((delta * dot_h).sum(dim=(1, 2)))
    return loss, derivatives
