"""A serving loop: a model called twice under torch.inference_mode, then tensors made after it."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
outputs = []
with torch.inference_mode():
    for _ in range(2):
        outputs.append(model(torch.randn(8, 16)))
after = torch.zeros(3) + 1
for _ in range(3):
    with torch.inference_mode():
        outputs.append(model(torch.randn(5, 16)).softmax(-1))
show(model, outputs, after)
