"""sys.exit(3) in the middle of training, right after a backward."""

import sys

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(5):
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    if step == 2:
        show(model, [p.grad for p in model.parameters()])
        sys.exit(3)
    opt.step()
