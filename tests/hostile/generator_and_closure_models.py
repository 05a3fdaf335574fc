"""Models that are not plain modules: a module whose forward is a generator (the work runs chunk by
chunk after forward returned), and a closure over a module and a captured tensor."""

import torch
from digest import show


class Streaming(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        for chunk in x.split(3):
            yield self.lin(chunk).tanh()


def make_closure():
    embed = torch.nn.Embedding(20, 8)
    scale = torch.ones(8, requires_grad=True)

    def model(tokens):
        return (embed(tokens) * scale).sum(1)

    return model, [*embed.parameters(), scale]


torch.manual_seed(0)
streaming = Streaming()
closure, closure_params = make_closure()
opt = torch.optim.Adam([*streaming.parameters(), *closure_params], lr=0.01)
for n in (7, 7, 9, 7):
    opt.zero_grad()
    loss = sum(out.square().sum() for out in streaming(torch.randn(n, 8)))
    loss = loss + closure(torch.randint(0, 20, (4, 5))).square().mean()
    loss.backward()
    opt.step()
show(streaming, closure_params)
