"""A functional model: a list of tensors and a function, no nn.Module anywhere."""

import torch
import torch.nn.functional as F
from digest import show

torch.manual_seed(0)
params = [torch.randn(32, 16) * 0.1, torch.zeros(32), torch.randn(4, 32) * 0.1, torch.zeros(4)]
for p in params:
    p.requires_grad_()


def model(x):
    w1, b1, w2, b2 = params
    return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)


opt = torch.optim.SGD(params, lr=0.1)
for _ in range(5):
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
show(params)
