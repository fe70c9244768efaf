"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as in the LDAM repo's ``models/resnet_cifar.py``.

``conv3x3(in_chans -> 16) + BN + ReLU``, three stages of ``n`` BasicBlocks with 16, 32, 64 channels and strides
1, 2, 2, option-A (parameter-free) shortcuts, global average pooling to 64-d features, then the head. Depth is
``6n + 2``: ResNet-20/32/44/56 have n = 3/5/7/9 and about 0.27M/0.46M/0.66M/0.85M parameters.

BBN split: :meth:`CifarResNet.forward_trunk` runs everything up to and excluding the last block of ``layer3``,
and :meth:`CifarResNet.make_branch` builds a fresh copy of that block. For ResNet-32 this is exactly BBN's CIFAR
network (``BBN lib/backbone/resnet_cifar.py:153-212``): a shared trunk whose layer3 has 4 blocks, plus two
single-block branches (``cb_block``, ``rb_block``), each a BasicBlock 64 -> 64 with stride 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.models.heads import Backbone, HeadKind, _check_positive_int, _kaiming_init, make_head

__all__ = ["BasicBlock", "CifarResNet", "ShortcutA", "resnet20", "resnet32", "resnet44", "resnet56"]


class ShortcutA(nn.Module):
    """Option-A identity shortcut: subsample spatially by ``stride`` and zero-pad the new channels.

    The LDAM repo writes this as ``LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p//4, p//4)))``;
    a lambda cannot be pickled (``ddp_spawn``), hence this module. The zero channels are split evenly before and
    after the input channels, as in the original (``planes // 4`` on each side when the width doubles).

    Args:
        in_planes: input channels.
        planes: output channels (>= ``in_planes``).
        stride: spatial subsampling step.

    Example:
        >>> import torch
        >>> out = ShortcutA(2, 4, stride=2)(torch.ones(1, 2, 4, 4))
        >>> out.shape, out[0, :, 0, 0].tolist()
        (torch.Size([1, 4, 2, 2]), [0.0, 1.0, 1.0, 0.0])
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        if planes < in_planes:
            raise ValueError(f"planes must be >= in_planes={in_planes} for an option-A shortcut, got {planes}")
        self.stride = stride
        extra = planes - in_planes
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3x3 convolutions and no conv bias.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first convolution (and of the shortcut's subsampling).

    Example:
        >>> import torch
        >>> BasicBlock(16, 32, stride=2)(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Backbone):
    """CIFAR ResNet with option-A shortcuts and Kaiming-normal init (LDAM ``ResNet_s``), features of size 64.

    Args:
        num_blocks: BasicBlocks per stage (three stages of 16, 32, 64 channels); ``(5, 5, 5)`` is ResNet-32.
        num_classes: number of classes C.
        in_chans: input channels (3 for CIFAR, 1 for MNIST-like data).
        head: ``"linear"`` or ``"cosine"`` (LDAM's :class:`~lt_lightning.models.heads.NormedLinear`).
        head_bias_init: constant initial bias of a linear head (see :func:`~lt_lightning.models.heads.make_head`).

    Attributes:
        stem: conv3x3 + BN + ReLU.
        layer1, layer2, layer3: ``nn.Sequential`` of :class:`BasicBlock`.

    Example:
        >>> import torch
        >>> model = CifarResNet((1, 1, 1), num_classes=3, in_chans=1)
        >>> model(torch.randn(2, 1, 8, 8)).shape, model.num_features
        (torch.Size([2, 3]), 64)
    """

    def __init__(
        self,
        num_blocks: Sequence[int] = (5, 5, 5),
        num_classes: int = 10,
        in_chans: int = 3,
        head: HeadKind = "linear",
        head_bias_init: float | None = None,
    ) -> None:
        super().__init__()
        num_blocks = tuple(num_blocks)
        if len(num_blocks) != 3:
            raise ValueError(f"num_blocks must hold 3 stage lengths, got {num_blocks!r}")
        for i, n in enumerate(num_blocks):
            _check_positive_int(f"num_blocks[{i}]", n)
        self.num_blocks = num_blocks
        self.num_classes = _check_positive_int("num_classes", num_classes)
        self.in_chans = _check_positive_int("in_chans", in_chans)
        self.num_features = 64

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 16, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
        )
        self.layer1 = self._make_layer(16, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(16, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(32, 64, num_blocks[2], stride=2)
        self.head = make_head(head, self.num_features, num_classes, bias_init=head_bias_init)
        self.apply(_kaiming_init)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        strides = [stride] + [1] * (n - 1)
        blocks = []
        for s in strides:
            blocks.append(BasicBlock(in_planes, planes, s))
            in_planes = planes
        return nn.Sequential(*blocks)

    def forward_trunk(self, x: Tensor) -> Tensor:
        """Stem, layer1, layer2 and all but the last block of layer3: ``(B, C, H, W) -> (B, 64 or 32, h, w)``."""
        x = self.layer2(self.layer1(self.stem(x)))
        for block in list(self.layer3)[:-1]:
            x = block(x)
        return x

    @property
    def last_block(self) -> nn.Module:
        """The last block, i.e. ``self.layer3[-1]`` (BBN's conventional branch)."""
        return self.layer3[-1]

    def make_branch(self) -> BasicBlock:
        """A freshly (Kaiming) initialised block with the configuration of ``layer3[-1]``.

        For ResNet-32 this is BBN's ``cb_block`` / ``rb_block``: a BasicBlock 64 -> 64 with stride 1. Its
        parameters are new tensors, never shared with the model; it is built on the CPU (a LightningModule that
        owns it moves it with the rest).
        """
        last: BasicBlock = self.layer3[-1]
        branch = BasicBlock(last.in_planes, last.planes, last.stride)
        branch.apply(_kaiming_init)
        return branch

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally average-pooled 64-d features."""
        return self.forward_pool(self.layer3[-1](self.forward_trunk(x)))


def _resnet(n: int, num_classes: int, in_chans: int, head: HeadKind, head_bias_init: float | None) -> CifarResNet:
    return CifarResNet((n, n, n), num_classes=num_classes, in_chans=in_chans, head=head, head_bias_init=head_bias_init)


def resnet20(
    num_classes: int = 10, in_chans: int = 3, head: HeadKind = "linear", head_bias_init: float | None = None
) -> CifarResNet:
    """ResNet-20 (n = 3, about 0.27M parameters).

    Example:
        >>> sum(p.numel() for p in resnet20().parameters())
        269722
    """
    return _resnet(3, num_classes, in_chans, head, head_bias_init)


def resnet32(
    num_classes: int = 10, in_chans: int = 3, head: HeadKind = "linear", head_bias_init: float | None = None
) -> CifarResNet:
    """ResNet-32 (n = 5, about 0.46M parameters), the backbone of the CIFAR-LT papers (LDAM, BBN, SAM-LT).

    Example:
        >>> sum(p.numel() for p in resnet32().parameters())
        464154
    """
    return _resnet(5, num_classes, in_chans, head, head_bias_init)


def resnet44(
    num_classes: int = 10, in_chans: int = 3, head: HeadKind = "linear", head_bias_init: float | None = None
) -> CifarResNet:
    """ResNet-44 (n = 7, about 0.66M parameters).

    Example:
        >>> sum(p.numel() for p in resnet44().parameters())
        658586
    """
    return _resnet(7, num_classes, in_chans, head, head_bias_init)


def resnet56(
    num_classes: int = 10, in_chans: int = 3, head: HeadKind = "linear", head_bias_init: float | None = None
) -> CifarResNet:
    """ResNet-56 (n = 9, about 0.85M parameters).

    Example:
        >>> sum(p.numel() for p in resnet56().parameters())
        853018
    """
    return _resnet(9, num_classes, in_chans, head, head_bias_init)
