"""The user's own forward pre-hook, forward hook and tensor hook raise: each error reaches the user unchanged."""

import torch
from digest import show

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
raised = []


def fail(where, step):
    error = ValueError(f"{where} refused step {step}")
    raised.append(error)
    raise error


def pre_hook(module, args):
    if step == 1:
        fail("pre-hook", step)


def hook(module, args, out):
    if step == 2:
        fail("hook", step)


def grad_hook(grad):
    if step == 3:
        fail("tensor hook", step)


model[0].register_forward_pre_hook(pre_hook)
model[2].register_forward_hook(hook)
for step in range(5):
    opt.zero_grad()
    try:
        out = model(torch.randn(4, 8))
        out.register_hook(grad_hook)
        out.square().mean().backward()
    except ValueError as exc:
        tb = exc.__traceback__
        while tb.tb_next:
            tb = tb.tb_next
        print(step, type(exc).__name__, exc.args, exc is raised[-1], tb.tb_frame.f_code.co_name)
        continue
    opt.step()
show(model)
