"""Activation checkpointing with use_reentrant=False: the block's forward runs again in backward."""

import torch
from digest import show
from torch.utils.checkpoint import checkpoint


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(16, 32)
        self.block = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.GELU(), torch.nn.Linear(32, 32))
        self.out = torch.nn.Linear(32, 4)

    def forward(self, x):
        h = checkpoint(self.block, self.inp(x), use_reentrant=False)
        return self.out(h)


torch.manual_seed(0)
model = Net()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(3):
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
show(model)
