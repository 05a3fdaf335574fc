"""Unpadding: the model keeps only ``x[mask]`` of a padded batch; the mask changes every batch."""

import torch
from digest import show


class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1)

    def forward(self, x, mask):
        return self.head(self.proj(x[mask]).relu())


torch.manual_seed(0)
model = Tokens()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for real in ((5, 2), (1, 1), (6, 6), (3, 0), (5, 2)):
    x = torch.randn(2, 6, 8)
    mask = torch.arange(6).expand(2, 6) < torch.tensor(real).unsqueeze(1)
    opt.zero_grad()
    model(x, mask).sum().backward()
    opt.step()
show(model)
