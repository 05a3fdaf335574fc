"""torch.func: functional_call, grad and vmap (per-sample gradients), parameters updated by hand."""

import torch
from digest import show
from torch.func import functional_call, grad, vmap

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
params = {name: p.detach() for name, p in model.named_parameters()}


def loss(params, x, y):
    return (functional_call(model, params, (x.unsqueeze(0),)).squeeze() - y) ** 2


per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
for _ in range(3):
    x, y = torch.randn(6, 8), torch.randn(6)
    grads = per_sample(params, x, y)
    params = {name: p - 0.1 * grads[name].mean(0) for name, p in params.items()}
show(params)
