"""In-place ops on views of leaf parameters between steps (masking rows, rescaling a slice)."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(4):
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    with torch.no_grad():
        model[0].weight[: 2 + step].mul_(0.5)
        model[2].weight.data[:, 0].zero_()
        model[0].bias.view(4, 8)[step].clamp_(min=0)
show(model)
