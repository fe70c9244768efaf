"""A small CNN for tiny grey-scale inputs (8x8 digits, 28x28 MNIST-like), fast on a CPU."""

from __future__ import annotations

from torch import Tensor, nn

from lt_lightning.models.heads import Backbone, HeadKind, _check_positive_int, _kaiming_init, make_head

__all__ = ["ConvBNReLU", "SmallCNN"]


class ConvBNReLU(nn.Sequential):
    """``conv3x3 (no bias, padding 1) -> BatchNorm2d -> ReLU``, keeping the spatial size.

    Example:
        >>> import torch
        >>> ConvBNReLU(1, 4)(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.in_channels, self.out_channels = in_channels, out_channels


class SmallCNN(Backbone):
    """Two conv blocks of ``width`` channels, 2x2 max-pool, two conv blocks of ``2 * width``, global average pool.

    Works for any input of at least 2x2 pixels (8x8 digits, 28x28 MNIST); features have ``D = 2 * width``.
    Kaiming-normal init as the CIFAR ResNets. BBN split: the trunk is everything but the last conv block
    (``blocks[:-1]``) and :meth:`make_branch` returns a fresh ``ConvBNReLU(2 * width, 2 * width)``.

    Args:
        num_classes: number of classes C.
        in_chans: input channels (1 for grey-scale).
        width: channels of the first two blocks.
        head: ``"linear"`` or ``"cosine"``.
        head_bias_init: constant initial bias of a linear head.

    Example:
        >>> import torch
        >>> model = SmallCNN(num_classes=10, in_chans=1, width=8)
        >>> model(torch.randn(2, 1, 8, 8)).shape, model.num_features
        (torch.Size([2, 10]), 16)
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        width: int = 32,
        head: HeadKind = "linear",
        head_bias_init: float | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = _check_positive_int("num_classes", num_classes)
        self.in_chans = _check_positive_int("in_chans", in_chans)
        self.width = _check_positive_int("width", width)
        self.num_features = 2 * width
        self.blocks = nn.Sequential(
            ConvBNReLU(in_chans, width),
            ConvBNReLU(width, width),
            nn.MaxPool2d(2),
            ConvBNReLU(width, 2 * width),
            ConvBNReLU(2 * width, 2 * width),
        )
        self.head = make_head(head, self.num_features, num_classes, bias_init=head_bias_init)
        self.apply(_kaiming_init)

    def forward_trunk(self, x: Tensor) -> Tensor:
        """All blocks but the last: ``(B, in_chans, H, W) -> (B, 2 * width, H // 2, W // 2)``."""
        for block in list(self.blocks)[:-1]:
            x = block(x)
        return x

    @property
    def last_block(self) -> nn.Module:
        """The last block, i.e. ``self.blocks[-1]`` (BBN's conventional branch)."""
        return self.blocks[-1]

    def make_branch(self) -> ConvBNReLU:
        """A freshly (Kaiming) initialised copy of the last conv block, sharing no parameters with the model."""
        branch = ConvBNReLU(2 * self.width, 2 * self.width)
        branch.apply(_kaiming_init)
        return branch

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally average-pooled ``2 * width`` features."""
        return self.forward_pool(self.blocks[-1](self.forward_trunk(x)))
