"""Data-dependent shapes inside forward: nonzero, masked_select, unique, repeat_interleave."""

import torch
from digest import show


class Router(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.score, self.expert = torch.nn.Linear(8, 1), torch.nn.Linear(8, 8)

    def forward(self, x, labels):
        chosen = x[(self.score(x).squeeze(1) > 0).nonzero().squeeze(1)]
        kept = torch.masked_select(x, x > 0.5).reshape(-1, 1).expand(-1, 8)
        counts = torch.unique(labels, return_counts=True)[1]
        repeated = x[: counts.numel()].repeat_interleave(counts, dim=0)
        return self.expert(chosen).sum() + self.expert(kept).sum() + self.expert(repeated).sum()


torch.manual_seed(0)
model = Router()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(5):
    x, labels = torch.randn(16, 8), torch.randint(0, 6, (16,))
    opt.zero_grad()
    model(x, labels).backward()
    opt.step()
show(model)
