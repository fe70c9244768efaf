"""DAR-BN (Distribution-Aware Routing BatchNorm, Zaken, Schwartz, Heyman, Wolf: OPeN, 2022): BatchNorm that routes
pure-noise samples apart from natural ones.

In training mode, with a noise mask in force (:func:`dar_bn_masks`, set around the training step by
:class:`~lt_lightning.callbacks.PureNoiseOversampling`), each converted layer computes, as the reproduction
``seungjaeryanlee/pure-noise`` ``models/dar_bn.py:30-62`` does::

    out[natural] = BN(x[natural])                              batch statistics of the natural samples; the running
                                                               statistics are updated from them alone; gradient flows
                                                               to x[natural], gamma and beta as in plain BN
    out[noise]   = gamma * (x[noise] - mu_n) / sqrt(var_n + eps) + beta    under torch.no_grad(): mu_n, var_n are the
                                                               noise samples' own (biased) batch statistics; nothing
                                                               upstream of the layer, nor gamma / beta, gets gradient
                                                               from the noise samples through this layer

So noise samples train only the layers after the last DAR-BN they pass (the classifier; in a ResNet also what the
identity shortcuts carry). In eval mode, without a mask, or with a mask that marks no sample, a converted layer
runs the plain BatchNorm forward: bit-identical outputs and running statistics. A stream whose samples are all
noise leaves the running statistics (and ``num_batches_tracked``) untouched.

:func:`convert_dar_bn` swaps the class of every ``BatchNorm1d`` / ``BatchNorm2d`` (and timm's ``BatchNormAct2d``)
in place: the parameters, buffers and their names stay, so a converted model's state dict loads into an unconverted
one and the other way round.

Several forward passes in one step: the mask context holds one mask per stream (BBN's ``(x_c, y_c, x_r, y_r)``
forwards ``x_c`` then ``x_r``). The first converted layer called in the step is the entry layer; each further call
of it starts the next stream (modulo the number of streams, so SAM's second pass over the same batch reuses the
first mask).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = convert_dar_bn(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    >>> type(net[1]).__name__
    'DARBatchNorm2d'
    >>> x, mask = torch.randn(4, 1, 5, 5), torch.tensor([False, True, False, True])
    >>> with dar_bn_masks(mask):
    ...     out = net(x)
    >>> out.shape
    torch.Size([4, 2, 3, 3])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DARBatchNorm1d", "DARBatchNorm2d", "convert_dar_bn", "dar_bn_masks", "has_dar_bn", "revert_dar_bn"]


@dataclass
class _Stream:
    size: int
    natural: Tensor  # indices of the natural samples
    noise: Tensor  # indices of the noise samples


@dataclass
class _Routing:
    streams: list[_Stream | None]
    entry: Any = None  # the first converted layer called in this step
    index: int = 0


_ROUTING: ContextVar[_Routing | None] = ContextVar("lt_lightning_dar_bn_routing", default=None)


def _stream(mask: Tensor | None) -> _Stream | None:
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.ndim != 1 or mask.dtype != torch.bool:
        raise TypeError(f"a DAR-BN noise mask must be a 1-D bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    noise = mask.nonzero().view(-1)
    if len(noise) == 0:
        return None  # plain BN, bit for bit
    return _Stream(len(mask), (~mask).nonzero().view(-1), noise)


def set_dar_bn_masks(*masks: Tensor | None) -> Any:
    """Put per-stream noise masks in force for the converted layers (None: a stream without noise); returns the
    token :func:`reset_dar_bn_masks` takes. Prefer the context manager :func:`dar_bn_masks`."""
    streams = [_stream(m) for m in masks]
    return _ROUTING.set(_Routing(streams) if any(s is not None for s in streams) else None)


def reset_dar_bn_masks(token: Any = None) -> None:
    """End the masks of :func:`set_dar_bn_masks` (``token`` None: clear whatever is in force)."""
    if token is None:
        _ROUTING.set(None)
    else:
        _ROUTING.reset(token)


@contextmanager
def dar_bn_masks(*masks: Tensor | None) -> Iterator[None]:
    """Route the samples marked True in ``masks`` (one 1-D bool mask per forward stream) as noise in every converted
    layer called inside the block."""
    token = set_dar_bn_masks(*masks)
    try:
        yield
    finally:
        reset_dar_bn_masks(token)


class _DARMixin:
    """The routing forward shared by every converted class (placed before the BatchNorm class in the MRO)."""

    def _routed_stream(self, x: Tensor) -> _Stream | None:
        routing = _ROUTING.get()
        if routing is None or not self.training:
            return None
        if routing.entry is None:
            routing.entry = self
        elif routing.entry is self:
            routing.index += 1  # the entry layer again: the next forward stream
        stream = routing.streams[routing.index % len(routing.streams)]
        if stream is not None and x.shape[0] != stream.size:
            raise RuntimeError(
                f"DAR-BN: a noise mask of {stream.size} samples is in force but {type(self).__name__} got a batch of "
                f"{x.shape[0]}; the mask must match the training batch of each forward stream"
            )
        return stream

    def _noise_forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.ndim)]
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)
        out = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.ndim - 2)
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    def forward(self, x: Tensor) -> Tensor:
        stream = self._routed_stream(x)
        if stream is None:
            return super().forward(x)  # type: ignore[misc]
        out = x.new_empty(x.shape)
        if len(stream.natural):
            out = out.index_copy(0, stream.natural, super().forward(x.index_select(0, stream.natural)))  # type: ignore[misc]
        with torch.no_grad():  # the reproduction computes the whole noise branch without gradient
            noise = self._post_noise(self._noise_forward(x.index_select(0, stream.noise)))
        return out.index_copy(0, stream.noise, noise.to(out.dtype))

    def _post_noise(self, x: Tensor) -> Tensor:
        return x


class DARBatchNorm1d(_DARMixin, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with DAR-BN routing (see the module docstring); made by :func:`convert_dar_bn`."""


class DARBatchNorm2d(_DARMixin, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with DAR-BN routing (see the module docstring); made by :func:`convert_dar_bn`."""


_CONVERSIONS: dict[type, type] = {nn.BatchNorm1d: DARBatchNorm1d, nn.BatchNorm2d: DARBatchNorm2d}

try:  # timm's fused BatchNorm + drop + activation: route the normalisation, then drop and activate both parts
    from timm.layers import BatchNormAct2d

    class DARBatchNormAct2d(_DARMixin, BatchNormAct2d):
        """timm's ``BatchNormAct2d`` with DAR-BN routing; the noise branch also goes through ``drop`` and ``act``."""

        def _post_noise(self, x: Tensor) -> Tensor:
            return self.act(self.drop(x))

    _CONVERSIONS[BatchNormAct2d] = DARBatchNormAct2d
    __all__ += ["DARBatchNormAct2d"]
except ImportError:  # pragma: no cover - timm is a dependency
    pass

_CONVERTED = tuple(_CONVERSIONS.values())


def has_dar_bn(model: nn.Module) -> bool:
    """Whether ``model`` holds at least one converted (routing) BatchNorm layer."""
    return any(isinstance(m, _CONVERTED) for m in model.modules())


def convert_dar_bn(model: nn.Module) -> nn.Module:
    """Turn every ``BatchNorm1d`` / ``BatchNorm2d`` / timm ``BatchNormAct2d`` of ``model`` into its DAR-BN routing
    version, in place (same parameters, buffers and state-dict names); returns ``model``. Idempotent.

    Raises:
        ValueError: ``model`` has no BatchNorm layer (DAR-BN would change nothing).
        TypeError: a BatchNorm of another kind (``SyncBatchNorm``, ``BatchNorm3d``, a subclass): named.
    """
    found = 0
    for name, module in model.named_modules():
        if isinstance(module, _CONVERTED):
            found += 1
            continue
        new_class = _CONVERSIONS.get(type(module))
        if new_class is not None:
            module.__class__ = new_class
            found += 1
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise TypeError(
                f"convert_dar_bn: {name or 'the model'} is a {type(module).__module__}.{type(module).__qualname__}; "
                "DAR-BN handles nn.BatchNorm1d, nn.BatchNorm2d and timm's BatchNormAct2d only (with "
                "Trainer(sync_batchnorm=True) the layers become SyncBatchNorm: turn it off)"
            )
    if found == 0:
        raise ValueError(
            f"convert_dar_bn: {type(model).__name__} has no BatchNorm layer (BatchNorm1d, BatchNorm2d or timm's "
            "BatchNormAct2d), so DAR-BN has nothing to route; use a backbone with BatchNorm or dar_bn=False"
        )
    return model


def revert_dar_bn(model: nn.Module) -> nn.Module:
    """Undo :func:`convert_dar_bn` in place (the plain BatchNorm classes again); returns ``model``."""
    back = {v: k for k, v in _CONVERSIONS.items()}
    for module in model.modules():
        if type(module) in back:
            module.__class__ = back[type(module)]
    return model
