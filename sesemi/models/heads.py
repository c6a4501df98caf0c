"""Classification heads: map backbone features to class logits."""

from __future__ import annotations

from torch import Tensor, nn


class LinearHead(nn.Module):
    """Optional dropout, then one linear layer. Built with ``(in_features, num_classes)`` by the training module."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features))


class MLPHead(nn.Module):
    """A hidden layer (BN + ReLU) before the linear classifier."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
