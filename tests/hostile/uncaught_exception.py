"""An uncaught exception raised inside a submodule's forward after some training: exit code 1."""

import torch
from digest import show


class Check(torch.nn.Module):
    def forward(self, x):
        if x.shape[0] > 8:
            raise ValueError(f"batch of {x.shape[0]} rows is larger than the 8 this layer accepts")
        return x


torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), Check(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for n in (8, 8, 8):
    opt.zero_grad()
    model(torch.randn(n, 16)).square().mean().backward()
    opt.step()
show(model)
model(torch.randn(9, 16))
