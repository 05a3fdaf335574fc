"""Stochastic depth (LayerDrop): each block is skipped at random while training, same input shapes."""

import torch
from digest import show


class DropBlocks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(4))
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        for block in self.blocks:
            if self.training and torch.rand(()) < 0.5:
                continue
            x = x + block(x).relu()
        return self.head(x)


torch.manual_seed(0)
model = DropBlocks()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
for _ in range(6):
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
show(model)
