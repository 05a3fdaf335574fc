"""torch.no_grad inside forward: a frozen teacher branch and batch statistics computed without grad."""

import torch
from digest import show


class Student(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.teacher, self.student = torch.nn.Linear(16, 4), torch.nn.Linear(16, 4)

    def forward(self, x):
        with torch.no_grad():
            target = self.teacher(x).softmax(-1)
            x = (x - x.mean(0)) / (x.std(0) + 1e-5)
        return torch.nn.functional.kl_div(self.student(x).log_softmax(-1), target, reduction="batchmean")


torch.manual_seed(0)
model = Student()
opt = torch.optim.SGD(model.student.parameters(), lr=0.1)
for _ in range(4):
    opt.zero_grad()
    model(torch.randn(8, 16)).backward()
    opt.step()
show(model)
