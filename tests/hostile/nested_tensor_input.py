"""A strided nested tensor (variable-length rows) passed to a model, with and without grad."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
outputs = []
for lengths in ((3, 5), (3, 5), (2, 4, 1)):
    batch = torch.nested.nested_tensor([torch.randn(n, 6) for n in lengths])
    with torch.no_grad():
        outputs.append(model(batch))
    outputs.append(model(batch).detach())
show(model, outputs)
