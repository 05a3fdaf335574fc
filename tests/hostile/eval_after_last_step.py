"""Work after the last optimizer step: a final evaluation in otel_flops.phase("eval-metrics")."""

import torch
from digest import show

import otel_flops

torch.manual_seed(0)
model = torch.nn.Linear(16, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(3):
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
with otel_flops.phase("eval-metrics"):
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    gram = a @ b
show(model, gram)
