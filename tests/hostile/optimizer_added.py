"""A second optimizer added mid-run for a layer that was frozen until then."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
model[0].requires_grad_(False)
optimizers = [torch.optim.SGD(model[2].parameters(), lr=0.1)]
for step in range(6):
    if step == 3:
        model[0].requires_grad_(True)
        optimizers.append(torch.optim.Adam(model[0].parameters(), lr=1e-3))
    for opt in optimizers:
        opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    for opt in optimizers:
        opt.step()
show(model)
