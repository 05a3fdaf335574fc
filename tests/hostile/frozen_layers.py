"""Layers frozen and unfrozen mid-run, and a BatchNorm kept in eval mode while the rest trains."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(6):
    model[0].requires_grad_(step not in (1, 2))
    model.train()
    if step >= 4:
        model[1].eval()
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
show(model)
