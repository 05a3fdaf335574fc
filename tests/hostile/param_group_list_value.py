"""A custom optimizer whose param group holds a list value (``momentum=[b1, b2]``)."""

import torch
from digest import show


class TwoMomentSGD(torch.optim.Optimizer):
    def __init__(self, params, lr=0.05, momentum=(0.9, 0.99)):
        super().__init__(params, {"lr": lr, "momentum": list(momentum)})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
                state["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(1e-8), value=-group["lr"])


torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
opt = TwoMomentSGD(model.parameters())
for _ in range(4):
    opt.zero_grad()
    model(torch.randn(6, 8)).square().mean().backward()
    opt.step()
show(model)
