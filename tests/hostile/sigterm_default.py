"""The script is killed by SIGTERM with the default action (it signals itself mid-run)."""

import os
import signal
import time

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(5):
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    if step == 2:
        show(model)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        print("still alive 10 s after SIGTERM")
