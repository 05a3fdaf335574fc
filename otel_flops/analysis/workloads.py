"""The seed paper's three reference workloads (sec. 4), built from plain torch.nn.

The demo, the tests and the benchmarks all train these, so their sizes live in one place.
torchvision is not a dependency: its PyPI build does not import beside the pinned CPU torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class MLP(nn.Module):
    """3-layer MLP classifier on 784-feature (flattened Fashion-MNIST) input."""

    def __init__(self, in_features: int = 784, hidden: int = 512, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 in its CIFAR-10 form (3x3 stem, no max-pool), as the paper's 3.64 GFLOPs implies."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.fc(torch.flatten(out, 1))


class TransformerLM(nn.Module):
    """4-layer, 4-head, width-256 transformer encoder with a language-model head."""

    def __init__(self, vocab: int = 8192, width: int = 256, heads: int = 4, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


@dataclass(frozen=True)
class Workload:
    """A model, a batch maker and the loss that trains it."""

    name: str
    build: Callable[[], nn.Module]
    make_batch: Callable[[int, torch.device], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _classification_batch(shape: tuple[int, ...], classes: int = 10):
    def make(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(batch, *shape, device=device)
        y = torch.randint(0, classes, (batch,), device=device)
        return x, y

    return make


def _token_batch(seq: int = 64, vocab: int = 8192):
    def make(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.randint(0, vocab, (batch, seq + 1), device=device)
        return tokens[:, :-1], tokens[:, 1:]

    return make


def _lm_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


WORKLOADS: dict[str, Workload] = {
    "mlp": Workload("mlp", MLP, _classification_batch((784,)), nn.CrossEntropyLoss()),
    "resnet18": Workload("resnet18", ResNet18, _classification_batch((3, 32, 32)), nn.CrossEntropyLoss()),
    "transformer": Workload("transformer", TransformerLM, _token_batch(), _lm_loss),
}


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, workload: Workload, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """One ordinary training step: forward, loss, backward, optimizer."""
    optimizer.zero_grad(set_to_none=True)
    loss = workload.loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss
