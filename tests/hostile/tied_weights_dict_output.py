"""A tiny language model whose output projection shares the embedding's weight and which returns
a tuple holding a dict; the loss combines the parts."""

import torch
from digest import show


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.mix = torch.nn.Linear(16, 16)
        self.out = torch.nn.Linear(16, 50, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        hidden = torch.tanh(self.mix(self.embed(tokens)))
        return self.out(hidden), {"hidden": hidden, "norm": hidden.norm()}


torch.manual_seed(0)
model = TiedLM()
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
for _ in range(4):
    tokens = torch.randint(0, 50, (3, 7))
    opt.zero_grad()
    logits, extra = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1))
    (loss + 0.01 * extra["norm"] + extra["hidden"].mean()).backward()
    opt.step()
show(model)
