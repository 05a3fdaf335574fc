"""A short last batch whose preprocessing (outside the model) runs between the step and its forward."""

import torch
from digest import show

torch.manual_seed(0)
data = torch.randn(70, 32)
model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(2):
    for start in range(0, 70, 32):
        batch = data[start:start + 32]
        batch = (batch - batch.mean(0)) / (batch.std(0) + 1e-5) @ torch.eye(32)
        opt.zero_grad()
        model(batch).square().mean().backward()
        opt.step()
show(model)
