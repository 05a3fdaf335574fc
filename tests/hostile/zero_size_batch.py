"""Zero-size batches between ordinary ones (a filter that left nothing), still stepped."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for n in (8, 0, 8, 0, 0, 8):
    x, y = torch.randn(n, 16), torch.randint(0, 4, (n,))
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    opt.step()
show(model)
