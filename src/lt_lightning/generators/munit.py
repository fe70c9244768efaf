"""MUNIT generator and discriminator (the architecture GIT trains, ``shared/research/git.md`` §1), re-implemented.

``MUNITGenerator`` = content encoder (conv7, ``n_downsample`` strided conv4, ``n_res`` residual blocks, instance
norm) + style encoder (conv7, ``style_downsample`` strided conv4, global average pool, conv1 to ``style_dim``; no
norm) + MLP (style -> the AdaIN parameters) + decoder (``n_res`` residual blocks with AdaIN in both convs, then per
downsampling a nearest x2 upsample, conv5, MUNIT layer norm, ReLU, and a conv7 + tanh). Every conv is reflect-padded.
Images are ``[0, 1]`` in and out; inside, as the reference, ``[-1, 1]``. ``forward(x)`` keeps the content of ``x``
and draws a fresh style ``N(0, I)`` per image (seeded by an optional ``torch.Generator``): the ``Tensor -> Tensor``
a :class:`~lt_lightning.callbacks.GenerativeInvarianceTransfer` callback calls.

``MUNITDiscriminator``: multi-scale PatchGAN (LSGAN outputs, no norm, leaky ReLU 0.2), scales separated by a 3x3
stride-2 average pool.

Configurations (:data:`MUNIT_CONFIGS`): ``reference`` (the GIT K49 / CIFAR configs: 15,007,369 generator parameters
at 28x28x1, 15,026,187 at 32x32x3; discriminator 2,755,009 / 2,757,057), ``small`` (28x28 digits / K49 on a CPU:
dim 16, 2 residual blocks, 3 style downsamplings) and ``tiny`` (8x8 digits: dim 16, 1 downsampling, 2 residual
blocks, 2 style downsamplings; 160,393 + 8,529 parameters).

The AdaIN parameters are passed functionally (no attributes set on modules, no running-statistics buffers: the
reference's AdaIN writes ``running_mean/var`` at every call, so a frozen generator would change its state dict).

Example:
    >>> import torch
    >>> g = MUNITGenerator(in_chans=1, image_size=8, **MUNIT_CONFIGS["tiny"]["generator"])
    >>> out = g(torch.rand(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
    (torch.Size([2, 1, 8, 8]), True)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from lt_lightning.functional.munit import adaptive_instance_norm, munit_layer_norm

MUNIT_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {
    "reference": {
        "generator": {
            "dim": 64, "style_dim": 8, "mlp_dim": 256, "n_downsample": 2, "n_res": 4, "style_downsample": 4,
        },
        "discriminator": {"dim": 64, "n_layers": 4, "num_scales": 1},
    },
    "small": {
        "generator": {
            "dim": 16, "style_dim": 8, "mlp_dim": 64, "n_downsample": 2, "n_res": 2, "style_downsample": 3,
        },
        "discriminator": {"dim": 16, "n_layers": 3, "num_scales": 1},
    },
    "tiny": {
        "generator": {
            "dim": 16, "style_dim": 8, "mlp_dim": 64, "n_downsample": 1, "n_res": 2, "style_downsample": 2,
        },
        "discriminator": {"dim": 16, "n_layers": 2, "num_scales": 1},
    },
}  # fmt: skip


def munit_config(name: str) -> dict[str, dict[str, Any]]:
    """A copy of a named configuration: ``{"generator": {...}, "discriminator": {...}}``.

    Example:
        >>> munit_config("reference")["generator"]["dim"]
        64
    """
    if name not in MUNIT_CONFIGS:
        raise ValueError(f"config must be one of {sorted(MUNIT_CONFIGS)}, got {name!r}")
    return copy.deepcopy(MUNIT_CONFIGS[name])


def check_min_ints(*checks: tuple[str, object, int]) -> None:
    """Each ``(name, value, low)``: ``value`` is an int (not a bool) >= ``low``; a ValueError naming it otherwise.

    Example:
        >>> check_min_ints(("dim", 8, 1), ("n_res", 0, 0))
    """
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _conv(cin: int, cout: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """Reflect padding then a biased convolution (MUNIT's ``Conv2dBlock`` without norm / activation)."""
    return nn.Sequential(nn.ReflectionPad2d(padding), nn.Conv2d(cin, cout, kernel, stride))


def _half(size: int) -> int:
    """Side after a conv4 / stride 2 / padding 1."""
    return (size + 2 - 4) // 2 + 1


def min_image_size(n_downsample: int, style_downsample: int) -> int:
    """The smallest square side both encoders accept (reflect padding needs a map larger than the padding; instance
    norm needs more than one element; the decoder must return the input's size).

    Example:
        >>> min_image_size(2, 4), min_image_size(1, 2), min_image_size(2, 3)
        (16, 4, 8)
    """
    side = 4
    while not _geometry_ok(side, n_downsample, style_downsample):
        side += 1
    return side


def _geometry_ok(side: int, n_downsample: int, style_downsample: int) -> bool:
    if side < 4:  # the conv7 pads by 3
        return False
    s = side
    for _ in range(style_downsample):
        if s < 2:  # reflect padding of 1 on a 1x1 map raises
            return False
        s = _half(s)
    c = side
    for _ in range(n_downsample):
        if c < 2:
            return False
        c = _half(c)
    return c >= 2  # instance norm and the residual blocks' reflect padding on the content map


class _ResBlock(nn.Module):
    """conv3 + norm + ReLU, conv3 + norm, plus the input. ``adain=True``: the norms are AdaIN with external
    parameters (two (weight, bias) pairs per block); else instance norm without affine."""

    def __init__(self, dim: int, adain: bool) -> None:
        super().__init__()
        self.conv1 = _conv(dim, dim, 3, 1, 1)
        self.conv2 = _conv(dim, dim, 3, 1, 1)
        self.adain = adain
        self.norm = None if adain else nn.InstanceNorm2d(dim, affine=False, track_running_stats=False)

    def forward(self, x: Tensor, params: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        if self.adain:
            assert params is not None and len(params) == 2
            h = torch.relu(adaptive_instance_norm(self.conv1(x), *params[0]))
            h = adaptive_instance_norm(self.conv2(h), *params[1])
        else:
            h = self.conv2(torch.relu(self.norm(self.conv1(x))))
            h = self.norm(h)
        return x + h


class _LayerNorm(nn.Module):
    """MUNIT's layer norm (unbiased std, eps on the std), gamma ~ U(0, 1), beta 0."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(channels).uniform_())
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return munit_layer_norm(x, self.gamma, self.beta, self.eps)


class StyleEncoder(nn.Module):
    """conv7 + ReLU; ``downsample`` conv4/s2 + ReLU (the first two double the width, the rest keep it); global
    average pool; conv1 to ``style_dim``. No normalisation. Output ``(B, style_dim, 1, 1)``."""

    def __init__(self, in_chans: int, dim: int, style_dim: int, downsample: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(in_chans, dim, 7, 1, 3), nn.ReLU()]
        for i in range(downsample):
            out = dim * 2 if i < 2 else dim
            layers += [_conv(dim, out, 4, 2, 1), nn.ReLU()]
            dim = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1)]
        self.model = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class ContentEncoder(nn.Module):
    """conv7 + IN + ReLU; ``downsample`` x (conv4/s2 doubling the width + IN + ReLU); ``n_res`` residual blocks."""

    def __init__(self, in_chans: int, dim: int, downsample: int, n_res: int) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int, s: int, p: int) -> list[nn.Module]:
            return [_conv(cin, cout, k, s, p), nn.InstanceNorm2d(cout), nn.ReLU()]

        layers = block(in_chans, dim, 7, 1, 3)
        for _ in range(downsample):
            layers += block(dim, dim * 2, 4, 2, 1)
            dim *= 2
        self.model = nn.Sequential(*layers)
        self.res = nn.ModuleList(_ResBlock(dim, adain=False) for _ in range(n_res))
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.model(x)
        for block in self.res:
            x = block(x)
        return x


class Decoder(nn.Module):
    """``n_res`` AdaIN residual blocks; ``upsample`` x (nearest x2, conv5 halving the width, layer norm, ReLU);
    conv7 to ``out_chans`` + tanh."""

    def __init__(self, dim: int, out_chans: int, upsample: int, n_res: int) -> None:
        super().__init__()
        self.dim = dim
        self.res = nn.ModuleList(_ResBlock(dim, adain=True) for _ in range(n_res))
        layers: list[nn.Module] = []
        for _ in range(upsample):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(dim, dim // 2, 5, 1, 2)]
            layers += [_LayerNorm(dim // 2), nn.ReLU()]
            dim //= 2
        layers += [_conv(dim, out_chans, 7, 1, 3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    @property
    def num_adain_params(self) -> int:
        """Two AdaIN layers per residual block, each ``2 * dim`` values (bias, then weight)."""
        return 4 * self.dim * len(self.res)

    def forward(self, content: Tensor, adain_params: Tensor) -> Tensor:
        x = content
        chunks = adain_params.split(self.dim, dim=1)  # in module order: bias (mean) then weight (std) per layer
        for i, block in enumerate(self.res):
            c = chunks[4 * i : 4 * i + 4]
            x = block(x, [(c[1], c[0]), (c[3], c[2])])
        return self.model(x)


def _kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MUNITGenerator(nn.Module):
    """MUNIT's ``AdaINGen``: content / style encoders, style MLP, AdaIN decoder; ``[0, 1]`` images in and out.

    Args:
        in_chans: image channels (1 grey, 3 colour).
        image_size: square side the generator is built for (checked at construction and on every call; read by the
            GIT callback's geometry check). None: any size the geometry allows.
        dim: width of the first conv (doubled by each downsampling).
        style_dim: style code size.
        mlp_dim: hidden width of the style MLP (3 layers).
        n_downsample: strided convs of the content encoder (= upsamplings of the decoder).
        n_res: residual blocks of the content encoder and of the decoder.
        style_downsample: strided convs of the style encoder (4 in the reference, hard-coded there).
    """

    def __init__(
        self,
        in_chans: int = 1,
        image_size: int | None = None,
        dim: int = 64,
        style_dim: int = 8,
        mlp_dim: int = 256,
        n_downsample: int = 2,
        n_res: int = 4,
        style_downsample: int = 4,
    ) -> None:
        super().__init__()
        check_min_ints(
            ("in_chans", in_chans, 1),
            ("dim", dim, 1),
            ("style_dim", style_dim, 1),
            ("mlp_dim", mlp_dim, 1),
            ("n_downsample", n_downsample, 0),
            ("n_res", n_res, 1),
            ("style_downsample", style_downsample, 0),
        )
        if image_size is not None:
            if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
                raise ValueError(f"image_size must be None or a positive integer, got {image_size!r}")
            _check_geometry(image_size, n_downsample, style_downsample)
        self.in_chans = in_chans
        self.image_size = image_size
        self.config = {
            "in_chans": in_chans, "image_size": image_size, "dim": dim, "style_dim": style_dim, "mlp_dim": mlp_dim,
            "n_downsample": n_downsample, "n_res": n_res, "style_downsample": style_downsample,
        }  # fmt: skip
        self.style_dim = style_dim
        self.enc_style = StyleEncoder(in_chans, dim, style_dim, style_downsample)
        self.enc_content = ContentEncoder(in_chans, dim, n_downsample, n_res)
        self.dec = Decoder(self.enc_content.out_dim, in_chans, n_downsample, n_res)
        self.mlp = nn.Sequential(
            nn.Linear(style_dim, mlp_dim),
            nn.ReLU(),
            nn.Linear(mlp_dim, mlp_dim),
            nn.ReLU(),
            nn.Linear(mlp_dim, self.dec.num_adain_params),
        )
        _kaiming_init(self)

    # ------------------------------------------------------------------ [-1, 1] interface (the reference's)
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Content ``(B, C', H', W')`` and style ``(B, style_dim, 1, 1)`` of images in ``[-1, 1]``."""
        self._check_input(x)
        return self.enc_content(x), self.enc_style(x)

    def decode(self, content: Tensor, style: Tensor) -> Tensor:
        """Images in ``[-1, 1]`` from a content map and a style ``(B, style_dim)`` or ``(B, style_dim, 1, 1)``."""
        return self.dec(content, self.mlp(style.flatten(1)))

    def random_style(self, batch: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """``N(0, I)`` styles ``(batch, style_dim, 1, 1)`` drawn from ``generator`` (else the global RNG)."""
        return torch.randn(batch, self.style_dim, 1, 1, generator=generator, device=device)

    # ------------------------------------------------------------------ [0, 1] interface (GIT's)
    def forward(self, x: Tensor, style: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """``x`` (float images in [0, 1]) with its content kept and a new style (default: ``N(0, I)`` per image,
        drawn from ``generator``); returns images in [0, 1] of the same shape."""
        self._check_input(x)
        content = self.enc_content(x * 2 - 1)
        if style is None:
            style = self.random_style(len(x), x.device, generator)
        return (self.decode(content, style) + 1) / 2

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"MUNITGenerator needs (B, C, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"MUNITGenerator was built for {self.in_chans}-channel images, got {x.shape[1]} channels")
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"MUNITGenerator was built for {self.image_size}x{self.image_size} images, got "
                f"{x.shape[-2]}x{x.shape[-1]}"
            )
        if self.image_size is None:
            side = min(x.shape[-2:])
            _check_geometry(side, self.config["n_downsample"], self.config["style_downsample"])


def _check_geometry(side: int, n_downsample: int, style_downsample: int) -> None:
    if side % (2**n_downsample):
        raise ValueError(
            f"image_size {side} is not divisible by 2**n_downsample = {2**n_downsample}: the decoder would not "
            "return the input's size"
        )
    if not _geometry_ok(side, n_downsample, style_downsample):
        need = min_image_size(n_downsample, style_downsample)
        smaller = next((s for s in range(style_downsample - 1, -1, -1) if _geometry_ok(side, n_downsample, s)), None)
        hint = "" if smaller is None else f", or use style_downsample <= {smaller} for {side}x{side} images"
        raise ValueError(
            f"image_size {side} is too small for style_downsample={style_downsample} and n_downsample={n_downsample}: "
            f"the encoders need images of at least {need}x{need}{hint} (reflect padding needs a map larger than "
            "its padding, instance norm more than one element)"
        )


class MUNITDiscriminator(nn.Module):
    """MUNIT's multi-scale discriminator (``MsImageDis``, LSGAN): per scale, conv4/s2 + LeakyReLU(0.2), then
    ``n_layers - 1`` conv4/s2 doubling the width + LeakyReLU, then conv1 to one channel; no norm, reflect padding;
    scales separated by ``AvgPool2d(3, 2, 1, count_include_pad=False)``. Weights ~ N(0, 0.02), biases 0 (the
    reference re-initialises its discriminators so). ``forward`` returns one patch map per scale, images in
    ``[-1, 1]``.

    Example:
        >>> d = MUNITDiscriminator(1, **MUNIT_CONFIGS["tiny"]["discriminator"])
        >>> [tuple(o.shape) for o in d(torch.zeros(2, 1, 8, 8))]
        [(2, 1, 2, 2)]
    """

    def __init__(self, in_chans: int = 1, dim: int = 64, n_layers: int = 4, num_scales: int = 1) -> None:
        super().__init__()
        check_min_ints(
            ("in_chans", in_chans, 1), ("dim", dim, 1), ("n_layers", n_layers, 1), ("num_scales", num_scales, 1)
        )
        self.in_chans = in_chans
        self.config = {"in_chans": in_chans, "dim": dim, "n_layers": n_layers, "num_scales": num_scales}
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.cnns = nn.ModuleList(self._make_net(in_chans, dim, n_layers) for _ in range(num_scales))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_net(in_chans: int, dim: int, n_layers: int) -> nn.Sequential:
        layers: list[nn.Module] = [_conv(in_chans, dim, 4, 2, 1), nn.LeakyReLU(0.2)]
        for _ in range(n_layers - 1):
            layers += [_conv(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            dim *= 2
        layers.append(nn.Conv2d(dim, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"MUNITDiscriminator was built for {self.in_chans}-channel images (B, C, H, W), got {tuple(x.shape)}"
            )
        outputs = []
        for i, cnn in enumerate(self.cnns):
            if i:
                x = self.downsample(x)
            outputs.append(cnn(x))
        return outputs
