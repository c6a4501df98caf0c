"""ResNet backbones in the CIFAR variant: a 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep their
resolution through the first stage (as in the SimCLR / MoCo / supervised CIFAR baselines).

``forward`` returns globally average-pooled, flattened features of size
``out_features == 8 * width * expansion`` (512 for ResNet-18/34, 2048 for ResNet-50/101/152 at ``width=64``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "resnet18_cifar", "resnet34_cifar", "resnet50_cifar"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride on the 3x3 conv (the "ResNet v1.5" placement used by torchvision).
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


_CONFIGS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class CifarResNet(nn.Module):
    """CIFAR-style ResNet backbone (pooled features, no classifier).

    Args:
        depth: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
        in_channels: number of input image channels (1 for grayscale, 3 for RGB).
        width: channels of the stem and the first stage; stages have width, 2*width, 4*width, 8*width channels
            (times 4 for bottleneck blocks).

    Attributes:
        out_features: size of the feature vector returned by ``forward``
            (``8 * width`` for depth 18/34, ``32 * width`` for depth 50/101/152).
    """

    def __init__(self, depth: int = 18, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        if depth not in _CONFIGS:
            raise ValueError(f"CifarResNet depth must be one of {sorted(_CONFIGS)}, got {depth}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        block, num_blocks = _CONFIGS[depth]
        self.depth = depth
        self.in_channels = in_channels
        self.width = width

        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        stages = []
        for i, (n, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_features: int = in_planes

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1)
        return torch.flatten(out, 1)


def resnet18_cifar(**kwargs) -> CifarResNet:
    """CIFAR ResNet-18 (11.2M parameters at width 64, ``out_features == 512``)."""
    return CifarResNet(depth=18, **kwargs)


def resnet34_cifar(**kwargs) -> CifarResNet:
    """CIFAR ResNet-34 (21.3M parameters at width 64, ``out_features == 512``)."""
    return CifarResNet(depth=34, **kwargs)


def resnet50_cifar(**kwargs) -> CifarResNet:
    """CIFAR ResNet-50 (23.5M parameters at width 64, ``out_features == 2048``)."""
    return CifarResNet(depth=50, **kwargs)
