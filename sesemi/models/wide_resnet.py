"""Wide ResNet backbone as used in the semi-supervised learning literature.

This is the WRN of MixMatch / ReMixMatch / FixMatch (Berthelot et al., Sohn et al.): pre-activation basic blocks,
batch norm with a slow running-statistics update (PyTorch ``momentum=0.001``, i.e. TensorFlow ``decay=0.999``),
LeakyReLU(0.1) and Kaiming-normal initialization. WRN-28-2 has about 1.47M parameters (1,466,320 without the
classifier), WRN-28-8 about 23.4M.

The module is a *backbone*: ``forward`` returns globally average-pooled, flattened features of size
``out_features == 64 * widen_factor``; the classifier lives in a separate head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WideResNet", "wrn_28_2", "wrn_28_8"]


class _PreActBlock(nn.Module):
    """Pre-activation basic block: BN-act-conv3x3-BN-act-(dropout)-conv3x3 plus a (1x1 conv) shortcut.

    Follows the reference FixMatch implementation: the residual branch always sees the activated input; the
    shortcut sees the raw input unless ``activate_before_residual`` is set (first block of the network, whose input
    comes straight from the stem convolution).
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        stride: int,
        drop_rate: float,
        bn_momentum: float,
        leaky_slope: float,
        activate_before_residual: bool = False,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.act1 = nn.LeakyReLU(negative_slope=leaky_slope)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.act2 = nn.LeakyReLU(negative_slope=leaky_slope)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.activate_before_residual = activate_before_residual
        self.shortcut: nn.Module | None = None
        if in_planes != out_planes or stride != 1:
            self.shortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        if self.activate_before_residual:
            x = out
        out = self.conv1(out)
        out = self.act2(self.bn2(out))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        identity = x if self.shortcut is None else self.shortcut(x)
        return identity + out


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` backbone (pooled features, no classifier).

    Args:
        depth: total depth; ``(depth - 4)`` must be divisible by 6 (28 gives 4 blocks per stage).
        widen_factor: channel multiplier k; the stages have 16k, 32k and 64k channels.
        in_channels: number of input image channels (1 for grayscale, 3 for RGB).
        drop_rate: dropout probability inside each block (0 disables it, as in FixMatch).
        bn_momentum: PyTorch BatchNorm momentum (0.001 = TensorFlow decay 0.999).
        leaky_slope: negative slope of the LeakyReLU activations.

    Attributes:
        out_features: size of the feature vector returned by ``forward`` (``64 * widen_factor``).
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 2,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        bn_momentum: float = 0.001,
        leaky_slope: float = 0.1,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (e.g. 10, 16, 22, 28, 40), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.widen_factor = widen_factor
        self.in_channels = in_channels
        self.out_features: int = channels[3]

        self.conv1 = nn.Conv2d(in_channels, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        block_kw = {"drop_rate": drop_rate, "bn_momentum": bn_momentum, "leaky_slope": leaky_slope}
        self.block1 = self._make_stage(n, channels[0], channels[1], 1, activate_before_residual=True, **block_kw)
        self.block2 = self._make_stage(n, channels[1], channels[2], 2, **block_kw)
        self.block3 = self._make_stage(n, channels[2], channels[3], 2, **block_kw)
        self.bn = nn.BatchNorm2d(channels[3], momentum=bn_momentum)
        self.act = nn.LeakyReLU(negative_slope=leaky_slope)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_stage(
        n: int,
        in_planes: int,
        out_planes: int,
        stride: int,
        activate_before_residual: bool = False,
        **block_kw,
    ) -> nn.Sequential:
        layers = [
            _PreActBlock(
                in_planes if i == 0 else out_planes,
                out_planes,
                stride if i == 0 else 1,
                activate_before_residual=activate_before_residual and i == 0,
                **block_kw,
            )
            for i in range(n)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = self.act(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1)
        return torch.flatten(out, 1)


def wrn_28_2(**kwargs) -> WideResNet:
    """WRN-28-2 (about 1.47M parameters, ``out_features == 128``): the CIFAR-10 / SVHN model of FixMatch."""
    return WideResNet(depth=28, widen_factor=2, **kwargs)


def wrn_28_8(**kwargs) -> WideResNet:
    """WRN-28-8 (about 23.4M parameters, ``out_features == 512``): the CIFAR-100 model of FixMatch."""
    return WideResNet(depth=28, widen_factor=8, **kwargs)
