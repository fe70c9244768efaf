"""Nuisance transforms of the K49-ROT/BG/DIL-LT invariance datasets (GIT ``make_kmnist_lt.py:18-58``).

Each transform has an explicit, seeded parameter distribution: ``sample_params(generator, n)`` draws ``n``
parameter sets, ``apply(images, params)`` applies given parameters (one per image), and calling the module samples
then applies with independent draws per image. Images are ``(C, H, W)`` or ``(B, C, H, W)`` tensors, ``uint8``
(0..255) or floating (intensities in [0, 1]), grey or colour, on any device (parameters are sampled on the CPU and
moved to the images' device).

- ``rotation``: rotate by theta degrees counter-clockwise about the centre, bicubic, same canvas, zero fill;
  theta ~ Uniform[-180, 180).
- ``background``: every background pixel (all channels 0) is set to b (b / 255 for float images);
  b ~ UniformInt{0..99}.
- ``dilation``: with probability 0.6 grey-scale dilation with a k x k ones kernel, k ~ UniformInt{2, 3, 4}; else
  erosion with k ~ UniformInt{1, 2} (k = 1 is the identity); parameters ``(is_dilation, k)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NUISANCES",
    "BackgroundNuisance",
    "DilationErosionNuisance",
    "Nuisance",
    "RotationNuisance",
    "create_nuisance",
    "dilate",
    "erode",
]


def _as_batch(images: Tensor) -> tuple[Tensor, bool]:
    """``(batch, was_single)``: a ``(C, H, W)`` image becomes a batch of one."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got dtype {images.dtype}")
    if images.ndim == 3:
        return images.unsqueeze(0), True
    if images.ndim == 4:
        return images, False
    raise ValueError(f"images must have shape (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")


def _check_params(params: Tensor, batch: int, trailing: tuple[int, ...], name: str) -> Tensor:
    params = torch.as_tensor(params)
    if tuple(params.shape) != (batch, *trailing):
        raise ValueError(
            f"{name} params must have shape {(batch, *trailing)} (one per image), got {tuple(params.shape)}"
        )
    return params


def _to_float(x: Tensor) -> Tensor:
    return x.float() if x.dtype == torch.uint8 else x


def _like(x: Tensor, like: Tensor) -> Tensor:
    """Cast a float result back to ``like``'s dtype, rounding and clamping to 0..255 for uint8 (as PIL does)."""
    if like.dtype == torch.uint8:
        return x.round().clamp(0, 255).to(torch.uint8)
    return x.to(like.dtype)


class Nuisance(nn.Module):
    """Base class: a random image transform with an explicit parameter distribution.

    Subclasses implement ``sample_params(generator, n)`` and ``apply(images, params)``; ``forward`` (and so
    ``__call__``) draws one parameter set per image and applies it.
    """

    def sample_params(self, generator: torch.Generator | None, n: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, images: Tensor, params: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, single = _as_batch(images)
        params = self.sample_params(generator, batch.shape[0])
        out = self.apply(batch, params)
        return out[0] if single else out


class RotationNuisance(Nuisance):
    """Rotate by theta ~ Uniform[-180, 180) degrees, bicubic, same canvas size, zero fill (K49-ROT-LT).

    theta > 0 is counter-clockwise as displayed (rows growing downwards), about the image centre, like
    ``PIL.Image.rotate`` / torchvision ``rotate``. Output pixel ``p`` samples the input at
    ``c + R(theta) (p - c)`` with ``R = [[cos, -sin], [sin, cos]]`` in (x right, y down) pixel coordinates.
    Implemented with ``affine_grid`` + ``grid_sample(mode="bicubic")`` because torchvision's tensor ``rotate``
    has no bicubic mode. Note ``grid_sample`` uses the cubic convolution coefficient a = -0.75 where PIL uses
    a = -0.5, so values differ slightly from the PIL reference. uint8 results are rounded and clamped to 0..255;
    float results are not clamped (bicubic may overshoot by a few percent).

    Args:
        low: smallest angle in degrees.
        high: largest angle (exclusive) in degrees.

    Example:
        >>> rot = RotationNuisance()
        >>> rot.sample_params(torch.Generator().manual_seed(0), 3).shape
        torch.Size([3])
        >>> x = torch.zeros(1, 3, 3); x[0, 0, 1] = 1.0  # top-middle pixel
        >>> rot.apply(x, torch.tensor([90.0]))[0].round(decimals=4)  # counter-clockwise: moves to middle-left
        tensor([[0., 0., 0.],
                [1., 0., 0.],
                [0., 0., 0.]])
    """

    def __init__(self, low: float = -180.0, high: float = 180.0) -> None:
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"need finite low <= high, got low={low!r}, high={high!r}")
        self.low, self.high = float(low), float(high)

    def sample_params(self, generator: torch.Generator | None, n: int) -> Tensor:
        """``n`` angles in degrees, theta ~ Uniform[low, high), float64 on the CPU."""
        _check_n(n)
        return self.low + (self.high - self.low) * torch.rand(n, generator=generator, dtype=torch.float64)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Rotate each image by its angle (degrees) from ``params`` of shape ``(B,)``."""
        batch, single = _as_batch(images)
        b, _, h, w = batch.shape
        angles = _check_params(params, b, (), "rotation").to(torch.float64)
        rad = torch.deg2rad(angles)
        cos, sin = torch.cos(rad), torch.sin(rad)
        # affine_grid works in [-1, 1] coordinates per axis, so the off-diagonal terms carry the aspect ratio.
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
        theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
        x = _to_float(batch)
        grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
        out = _like(out, batch)
        return out[0] if single else out


class BackgroundNuisance(Nuisance):
    """Set every background pixel to intensity b ~ UniformInt{low..high-1} (K49-BG-LT, default 0..99).

    ``out = where(x == 0, b, x)`` on the 0..255 scale (``b / 255`` for float images). A pixel is background when all
    of its channels are 0 (for grey images: the pixel equals 0); all its channels are then set to b.

    Args:
        low: smallest level (inclusive), 0..255.
        high: largest level (exclusive), low < high <= 256.

    Example:
        >>> bg = BackgroundNuisance()
        >>> x = torch.tensor([[[0, 7], [200, 0]]], dtype=torch.uint8)
        >>> bg.apply(x, torch.tensor([42]))
        tensor([[[ 42,   7],
                 [200,  42]]], dtype=torch.uint8)
    """

    def __init__(self, low: int = 0, high: int = 100) -> None:
        super().__init__()
        if not (0 <= low < high <= 256):
            raise ValueError(f"need 0 <= low < high <= 256, got low={low!r}, high={high!r}")
        self.low, self.high = int(low), int(high)

    def sample_params(self, generator: torch.Generator | None, n: int) -> Tensor:
        """``n`` levels b ~ UniformInt{low..high-1} (int64 on the CPU, 0..255 scale)."""
        _check_n(n)
        return torch.randint(self.low, self.high, (n,), generator=generator)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Fill the background of each image with its level from ``params`` of shape ``(B,)`` (0..255 scale)."""
        batch, single = _as_batch(images)
        levels = _check_params(params, batch.shape[0], (), "background").to(batch.device)
        fill = levels.to(torch.uint8) if batch.dtype == torch.uint8 else levels.to(batch.dtype) / 255.0
        is_bg = (batch == 0).all(dim=1, keepdim=True)
        out = torch.where(is_bg, fill.view(-1, 1, 1, 1), batch)
        return out[0] if single else out


def _pad_for_kernel(x: Tensor, k: int, value: float) -> Tensor:
    # cv2's default anchor for a k x k kernel is (k // 2, k // 2): the window covers offsets -k//2 .. k-1-k//2,
    # so an even kernel reaches one pixel further left/up than right/down (a bright spot grows right/down).
    before, after = k // 2, k - 1 - k // 2
    return F.pad(x, (before, after, before, after), value=value)


def dilate(images: Tensor, k: int) -> Tensor:
    """Grey-scale dilation with a ``k x k`` ones kernel, one iteration, like ``cv2.dilate`` (default anchor).

    ``out[y, x] = max_{dy, dx in [-k//2, k-1-k//2]} x[y + dy, x + dx]`` per channel; outside the image counts as
    -inf (never wins), as cv2's default border does.

    Example:
        >>> x = torch.zeros(1, 1, 4, 4); x[0, 0, 1, 1] = 1.0
        >>> dilate(x, 2)[0, 0]  # even k: the window covers offsets -1..0, so the spot grows right/down
        tensor([[0., 0., 0., 0.],
                [0., 1., 1., 0.],
                [0., 1., 1., 0.],
                [0., 0., 0., 0.]])
    """
    batch, single = _as_batch(images)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    x = _to_float(batch)
    out = F.max_pool2d(_pad_for_kernel(x, k, -math.inf), kernel_size=k, stride=1)
    out = _like(out, batch)
    return out[0] if single else out


def erode(images: Tensor, k: int) -> Tensor:
    """Grey-scale erosion with a ``k x k`` ones kernel, one iteration, like ``cv2.erode`` (default anchor).

    ``out[y, x] = min_{dy, dx in [-k//2, k-1-k//2]} x[y + dy, x + dx]`` (computed as ``-maxpool(-x)``); outside the
    image counts as +inf. ``k = 1`` is the identity.

    Example:
        >>> x = torch.ones(1, 1, 3, 3); x[0, 0, 0, 0] = 0.0
        >>> erode(x, 2)[0, 0]
        tensor([[0., 0., 1.],
                [0., 0., 1.],
                [1., 1., 1.]])
    """
    batch, single = _as_batch(images)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    x = _to_float(batch)
    out = -F.max_pool2d(_pad_for_kernel(-x, k, -math.inf), kernel_size=k, stride=1)
    out = _like(out, batch)
    return out[0] if single else out


class DilationErosionNuisance(Nuisance):
    """With prob. ``p_dilate`` dilate with k ~ UniformInt(dilate_sizes), else erode with k ~ UniformInt(erode_sizes).

    Defaults follow K49-DIL-LT: P(dilate) = 0.6, dilation k in {2, 3, 4}, erosion k in {1, 2} (k = 1: identity);
    one iteration of :func:`dilate` / :func:`erode`. Parameters are an int64 ``(n, 2)`` tensor of rows
    ``(is_dilation, k)``.

    Args:
        p_dilate: probability of dilating, in [0, 1].
        dilate_sizes: kernel sizes drawn uniformly for dilation.
        erode_sizes: kernel sizes drawn uniformly for erosion.

    Example:
        >>> t = DilationErosionNuisance()
        >>> t.sample_params(torch.Generator().manual_seed(0), 2).shape
        torch.Size([2, 2])
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 1, 1] = 1.0
        >>> t.apply(x, torch.tensor([[1, 3]]))[0, 0]  # dilate with k = 3
        tensor([[1., 1., 1.],
                [1., 1., 1.],
                [1., 1., 1.]])
    """

    def __init__(
        self,
        p_dilate: float = 0.6,
        dilate_sizes: tuple[int, ...] = (2, 3, 4),
        erode_sizes: tuple[int, ...] = (1, 2),
    ) -> None:
        super().__init__()
        if not 0.0 <= p_dilate <= 1.0:
            raise ValueError(f"p_dilate must be in [0, 1], got {p_dilate!r}")
        for name, sizes in (("dilate_sizes", dilate_sizes), ("erode_sizes", erode_sizes)):
            if len(sizes) == 0 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {sizes!r}")
        self.p_dilate = float(p_dilate)
        self.dilate_sizes = tuple(dilate_sizes)
        self.erode_sizes = tuple(erode_sizes)

    def sample_params(self, generator: torch.Generator | None, n: int) -> Tensor:
        """``n`` rows ``(is_dilation, k)``: is_dilation ~ Bernoulli(p_dilate), k uniform over that branch's sizes."""
        _check_n(n)
        is_dil = torch.rand(n, generator=generator) < self.p_dilate
        dil_k = torch.tensor(self.dilate_sizes)[torch.randint(len(self.dilate_sizes), (n,), generator=generator)]
        ero_k = torch.tensor(self.erode_sizes)[torch.randint(len(self.erode_sizes), (n,), generator=generator)]
        return torch.stack([is_dil.long(), torch.where(is_dil, dil_k, ero_k)], dim=1)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        """Dilate/erode each image with its ``(is_dilation, k)`` row of ``params`` (shape ``(B, 2)``)."""
        batch, single = _as_batch(images)
        params = _check_params(params, batch.shape[0], (2,), "dilation").long().cpu()
        out = torch.empty_like(batch)
        # Images sharing an operation are processed together: at most a handful of distinct (op, k) pairs.
        for op, k in torch.unique(params, dim=0).tolist():
            idx = ((params[:, 0] == op) & (params[:, 1] == k)).nonzero().squeeze(1).to(batch.device)
            out[idx] = (dilate if op else erode)(batch[idx], int(k))
        return out[0] if single else out


NUISANCES: dict[str, type[Nuisance]] = {
    "rotation": RotationNuisance,
    "background": BackgroundNuisance,
    "dilation": DilationErosionNuisance,
}


def create_nuisance(name: str, **kwargs) -> Nuisance:
    """Build a nuisance transform by name (``rotation``, ``background``, ``dilation``).

    Example:
        >>> create_nuisance("background", high=10).high
        10
    """
    if name not in NUISANCES:
        raise ValueError(f"unknown nuisance {name!r}; available: {sorted(NUISANCES)}")
    return NUISANCES[name](**kwargs)
