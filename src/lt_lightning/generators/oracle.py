"""``OracleGenerator``: the true nuisance transform used as a GIT generator (synthetic invariance datasets only).

GIT learns a dataset's nuisance transformations; on the K49 / Digits nuisance datasets the true transform is known,
so applying it directly gives the upper bound of what a perfect generator could do (the paper's oracle). Like every
GIT generator it maps float images in [0, 1] ``(B, C, H, W)`` to images of the same shape in [0, 1].

Inputs are first rounded to the 1/255 grid: un-normalising a batch in floating point leaves ~1e-7 where a pixel was
0, and the background nuisance only fills pixels that are exactly 0.

Example:
    >>> import torch
    >>> oracle = OracleGenerator("background", nuisance_kwargs={"low": 50, "high": 51})
    >>> out = oracle(torch.zeros(2, 1, 3, 3) + 1e-7, generator=torch.Generator().manual_seed(0))
    >>> out.shape, round(float(out[0, 0, 0, 0]) * 255)
    (torch.Size([2, 1, 3, 3]), 50)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lt_lightning.data.nuisance import NUISANCES, Nuisance, create_nuisance


class OracleGenerator(nn.Module):
    """The true nuisance (``rotation``, ``background``, ``dilation`` or a :class:`Nuisance`) as a generator.

    Args:
        nuisance: a name of :data:`lt_lightning.data.nuisance.NUISANCES` or a ``Nuisance`` instance.
        nuisance_kwargs: keyword arguments of the named nuisance (e.g. ``{"high": 50}``).
    """

    def __init__(self, nuisance: str | Nuisance, nuisance_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if isinstance(nuisance, str):
            if nuisance not in NUISANCES:
                raise ValueError(f"nuisance must be one of {sorted(NUISANCES)} or a Nuisance, got {nuisance!r}")
            nuisance = create_nuisance(nuisance, **(nuisance_kwargs or {}))
        elif not isinstance(nuisance, Nuisance):
            raise TypeError(f"nuisance must be a name or a Nuisance, got {type(nuisance).__name__}")
        elif nuisance_kwargs:
            raise ValueError("nuisance_kwargs only apply to a nuisance given by name")
        self.nuisance = nuisance

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Apply fresh nuisance draws to ``images`` (float, [0, 1]); ``generator`` seeds the draws."""
        if generator is not None and generator.device.type != "cpu":
            # Nuisance parameters are drawn on the CPU: derive a CPU stream from the device generator.
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator().manual_seed(seed)
        on_grid = (images.clamp(0, 1) * 255).round() / 255
        return self.nuisance(on_grid, generator=generator).clamp(0, 1)

    def extra_repr(self) -> str:
        return type(self.nuisance).__name__
