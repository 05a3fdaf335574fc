"""Gradient accumulation over micro-batches, clipping before each step, a short last accumulation."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for micro_batches in (3, 3, 3, 2):
    for _ in range(micro_batches):
        x, y = torch.randn(4, 16), torch.randint(0, 4, (4,))
        (torch.nn.functional.cross_entropy(model(x), y) / micro_batches).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
    opt.step()
    opt.zero_grad()
show(model)
