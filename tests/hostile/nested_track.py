"""track() nested in track(), and track() entered again after it ended."""

import torch
from digest import show

import otel_flops

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)


def step():
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()


with otel_flops.track(model, name="outer"):
    for _ in range(2):
        with otel_flops.track(model, name="inner"):
            step()
with otel_flops.track():
    step()
show(model)
