"""The script installs its own SIGTERM handler, receives SIGTERM mid-run and stops cleanly."""

import os
import signal

import torch
from digest import show

stop = []


def on_term(signum, frame):
    stop.append(signum)


signal.signal(signal.SIGTERM, on_term)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
step = 0
while not stop:
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
    step += 1
    if step == 3:
        os.kill(os.getpid(), signal.SIGTERM)
print("stopped after", step, "steps; handler still ours:", signal.getsignal(signal.SIGTERM) is on_term)
show(model)
