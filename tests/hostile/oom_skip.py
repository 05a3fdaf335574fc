"""A loop that catches an out-of-memory error raised mid-forward and skips that batch."""

import torch
from digest import show


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 64), torch.nn.Linear(64, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.a(x).relu()
        if self.calls % 4 == 0:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.b(h)


torch.manual_seed(0)
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
skipped = 0
for _ in range(12):
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    opt.zero_grad()
    try:
        loss = torch.nn.functional.cross_entropy(model(x), y)
    except torch.OutOfMemoryError:
        skipped += 1
        continue
    loss.backward()
    opt.step()
print("skipped", skipped)
show(model)
