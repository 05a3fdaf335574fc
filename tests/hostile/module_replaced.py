"""Modules replaced mid-run: the activation swapped (same parameters), then a wider head."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(6):
    if step == 2:
        model[1] = torch.nn.GELU()
    if step == 4:
        model[2] = torch.nn.Linear(32, 8)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
show(model)
