"""CIFAR-10 ResNet-20/32/44/56 as in Idelbayev's "Proper ResNet Implementation for CIFAR10/CIFAR100".

Parameter names match the published checkpoints (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``linear``) once their ``module.`` prefix is stripped. The option-A shortcut, a lambda in the
original, is the module :class:`ShortcutA` here so that models deepcopy and pickle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CifarResNet", "ShortcutA", "BasicBlock", "cifar_resnet", "DEPTHS"]

DEPTHS = (20, 32, 44, 56)


class ShortcutA(nn.Module):
    """Parameter-free shortcut (option A): subsample by 2 and zero-pad the new channels.

    Args:
        planes: Output channels; ``planes // 4`` zero channels go on each side of the input's.
    """

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity or option-A shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = ShortcutA(planes) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 3x32x32 inputs with 16/32/64 channels and ``n`` blocks per stage (depth 6n+2).

    Args:
        num_blocks: Blocks in each of the three stages, e.g. ``(3, 3, 3)`` for ResNet-20.
        num_classes: Classifier outputs.
    """

    def __init__(self, num_blocks: tuple[int, int, int], num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, blocks, stride in zip((16, 32, 64), num_blocks, (1, 2, 2)):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # the original's _weights_init: Kaiming normal for conv and linear
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # Global average pool; the original's avg_pool2d(out, width) is the same on square maps.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """Builds ResNet-``depth`` for CIFAR (depth = 6n + 2, e.g. 20, 32, 44, 56, 110)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), num_classes)
