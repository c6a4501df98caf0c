import torch
from torch import nn


class LeNet(nn.Module):
    """A backbone only needs forward(images) -> features and an `out_features` attribute."""

    def __init__(self, in_channels: int = 1, features: int = 24) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, features, 3, padding=1)
        self.out_features = features

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return x.mean(dim=(2, 3))


class CosineHead(nn.Module):
    """A classification head is built with (in_features, num_classes) and maps features to logits."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_classes, in_features))
        self.scale = scale

    def forward(self, features):
        f = nn.functional.normalize(features, dim=1)
        p = nn.functional.normalize(self.prototypes, dim=1)
        return self.scale * f @ p.t()
