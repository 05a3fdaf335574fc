"""Train one step, evaluate under torch.inference_mode, then opt.zero_grad(): three times."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scores = []
for _ in range(3):
    model.train()
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    model.eval()
    with torch.inference_mode():
        scores.append(model(torch.randn(4, 16)).argmax(-1))
    opt.zero_grad()
show(model, scores)
