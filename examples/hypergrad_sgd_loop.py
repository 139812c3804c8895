"""Your own PyTorch loop, two lines changed: the exact d(validation loss)/d(lr) of the run.

Trains a small MLP on scikit-learn's bundled digits (no download) with ``HypergradSGD``,
then prints the validation loss, its derivative in the learning rate, and a finite-difference
check from two more runs. Then it takes a few signed steps on log(lr) along the hypergradient,
each a full training run at the new lr (train-by-validation on one task).

    python examples/hypergrad_sgd_loop.py
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from l2l_tune.data import load_digits
from l2l_tune.hypergrad import HypergradSGD

warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")

data = load_digits()
x = torch.as_tensor(data.train_images, dtype=torch.float64) / data.max_pixel
y = torch.as_tensor(data.train_labels)
x_train, y_train, x_val, y_val = x[:1000], y[:1000], x[1000:], y[1000:]
batches = [(x_train[i : i + 32], y_train[i : i + 32]) for i in range(0, 1000, 32)] * 5


def train(lr: float) -> tuple[nn.Module, HypergradSGD]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10)).double()
    opt = HypergradSGD(model.parameters(), lr=lr)  # line 1 of 2: was torch.optim.SGD
    for xb, yb in batches:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward(create_graph=True)  # line 2 of 2: keep the graph of the gradient
        opt.step()
    return model, opt


lr = 0.05
model, opt = train(lr)
val_loss = F.cross_entropy(model(x_val), y_val)
hypergradient = opt.hypergradient(val_loss)
h = 1e-6
plus = F.cross_entropy(train(lr * (1 + h))[0](x_val), y_val).item()
minus = F.cross_entropy(train(lr * (1 - h))[0](x_val), y_val).item()
print(f"lr={lr}: validation loss {val_loss.item():.6f}, d/dlr = {hypergradient:.6f} "
      f"(central difference {(plus - minus) / (2 * lr * h):.6f})")  # fmt: skip

# A few hypergradient steps on log(lr) (each a full training run at the new lr).
log_lr = torch.log(torch.tensor(lr)).item()
for step in range(5):
    model, opt = train(float(torch.exp(torch.tensor(log_lr))))
    val_loss = F.cross_entropy(model(x_val), y_val)
    g = opt.hypergradient(val_loss) * float(torch.exp(torch.tensor(log_lr)))  # d/dlog lr
    print(f"step {step}: lr={torch.exp(torch.tensor(log_lr)).item():.4f} "
          f"validation loss {val_loss.item():.4f}")  # fmt: skip
    log_lr -= 0.5 * max(min(g / max(abs(g), 1e-12), 1.0), -1.0)  # signed step of 0.5 in log lr
