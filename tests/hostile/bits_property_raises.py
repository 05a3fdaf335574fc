"""A quantized-looking layer whose ``bits`` property raises RuntimeError (its config is not loaded)."""

import torch
from digest import show


class LazyQuantizedLinear(torch.nn.Linear):
    @property
    def bits(self):
        raise RuntimeError("quantization config not loaded yet")


torch.manual_seed(0)
model = torch.nn.Sequential(LazyQuantizedLinear(8, 16), torch.nn.ReLU(), LazyQuantizedLinear(16, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(3):
    opt.zero_grad()
    model(torch.randn(4, 8)).square().mean().backward()
    opt.step()
show(model)
