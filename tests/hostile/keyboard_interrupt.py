"""KeyboardInterrupt raised by the script itself in the middle of a forward (as Ctrl-C would)."""

import torch
from digest import show


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.a(x)
        if self.calls == 4:
            show(self)
            raise KeyboardInterrupt
        return self.b(h.relu())


torch.manual_seed(0)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(6):
    opt.zero_grad()
    model(torch.randn(8, 16)).square().mean().backward()
    opt.step()
