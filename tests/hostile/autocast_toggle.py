"""CPU bfloat16 autocast switched on and off between steps, no GradScaler."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(6):
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=step % 3 != 0):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
show(model)
