"""A model called from worker threads (a thread-pool server) while the main thread trains it."""

from concurrent.futures import ThreadPoolExecutor

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
requests = [torch.randn(4, 16) for _ in range(6)]


def serve(x):
    with torch.no_grad():
        return model(x)


answers = []
with ThreadPoolExecutor(max_workers=2) as pool:
    for step in range(3):
        answers += list(pool.map(serve, requests[2 * step:2 * step + 2]))
        opt.zero_grad()
        model(torch.randn(8, 16)).square().mean().backward()
        opt.step()
show(model, answers)
