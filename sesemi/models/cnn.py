"""A small CNN for small grayscale images (8x8 digits, 28x28 MNIST-like data)."""

from __future__ import annotations

from torch import Tensor, nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


class SmallCNN(nn.Module):
    """Conv-BN-LeakyReLU stages with 2x downsampling between them, global average pooling at the end.

    ``stages`` sets the depth (one stage = two conv blocks, then a 2x max-pool except after the last stage) and
    ``width`` the first stage's channels, doubled at each stage.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, stages: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(stages):
            cout = width * 2**i
            layers += [_block(cin, cout), _block(cout, cout)]
            if i < stages - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.out_features = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)
