"""Your own AdamW loop, two lines changed: d(validation loss)/d(lr) and /d(weight_decay).

Trains a small MLP on scikit-learn's bundled digits (no download) with ``HypergradAdamW``
(the same weights as ``torch.optim.AdamW``, bit for bit), with a warmup-and-decay
``torch.optim.lr_scheduler`` and a per-layer step size, then prints the validation loss,
its hypergradients and central-difference checks from ``torch.optim.AdamW`` runs.

    python examples/hypergrad_adamw_loop.py
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from l2l_tune.data import load_digits
from l2l_tune.hypergrad import HypergradAdamW

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

data = load_digits()
x = torch.as_tensor(data.train_images, dtype=torch.float64) / data.max_pixel
y = torch.as_tensor(data.train_labels)
x_train, y_train, x_val, y_val = x[:1000], y[:1000], x[1000:], y[1000:]
batches = [(x_train[i : i + 32], y_train[i : i + 32]) for i in range(0, 1000, 32)] * 3


def train(
    lr: float, weight_decay: float, *, hyper: bool
) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10)).double()
    groups = [
        {"params": model[0].parameters()},
        {"params": model[2].parameters(), "lr": lr / 3},  # a smaller step for the last layer
    ]
    opt_class = HypergradAdamW if hyper else torch.optim.AdamW  # line 1 of 2: was AdamW
    opt = opt_class(groups, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 20))
    for xb, yb in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward(create_graph=hyper)  # line 2 of 2: keep the graph of the gradient
        opt.step()
        schedule.step()
    return model, opt


def val_loss_after(lr: float, weight_decay: float) -> float:
    model, _ = train(lr, weight_decay, hyper=False)
    return F.cross_entropy(model(x_val), y_val).item()


lr, weight_decay = 3e-3, 1e-2
model, opt = train(lr, weight_decay, hyper=True)
val_loss = F.cross_entropy(model(x_val), y_val)
assert isinstance(opt, HypergradAdamW)
grads = opt.hypergradients(val_loss)  # {"lr": [group 0, group 1], "weight_decay": ...}
reference = val_loss_after(lr, weight_decay)
print(f"validation loss {val_loss.item():.6f} (torch.optim.AdamW: {reference:.6f})")

# Checks: the per-group lrs move together when the base lr moves (lr and lr/3), so
# d/d(base lr) = d/dlr_0 + d/dlr_1 / 3; the weight decay is shared by both groups.
h = 1e-5
per_group = grads["lr"]
assert isinstance(per_group, list)
d_lr = per_group[0] + per_group[1] / 3
fd_lr = (
    val_loss_after(lr * (1 + h), weight_decay) - val_loss_after(lr * (1 - h), weight_decay)
) / (2 * lr * h)
wd = weight_decay
fd_wd = (val_loss_after(lr, wd * (1 + h)) - val_loss_after(lr, wd * (1 - h))) / (2 * wd * h)
print(f"d/d(lr of each group) = {per_group[0]:.6f}, {per_group[1]:.6f}")
print(f"d/d(base lr)          = {d_lr:.6f}  (central difference {fd_lr:.6f})")
print(f"d/d(weight_decay)     = {grads['weight_decay']:.6f}  (central difference {fd_wd:.6f})")
