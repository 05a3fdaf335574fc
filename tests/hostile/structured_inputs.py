"""Inputs held in a dataclass, a dict and a plain object; the tensors' shapes change between steps."""

from dataclasses import dataclass

import torch
from digest import show


@dataclass
class Batch:
    x: torch.Tensor
    extra: dict


class Holder:
    def __init__(self, t):
        self.t = t


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)

    def forward(self, batch, holder):
        h = self.a(batch.x) + self.a(batch.extra["side"]).mean(0)
        return self.b(h * holder.t.sum()).sum()


torch.manual_seed(0)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for n in (4, 4, 32, 2, 32):
    batch = Batch(torch.randn(n, 8), {"side": torch.randn(n + 1, 8)})
    opt.zero_grad()
    model(batch, Holder(torch.randn(n, 3) / n)).backward()
    opt.step()
show(model)
