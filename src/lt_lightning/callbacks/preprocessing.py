"""The datamodule's input normalisation, for callbacks that make or edit normalised images (GIT, OPeN)."""

from __future__ import annotations

from typing import Any

import torch


def datamodule_normalisation(trainer: Any, need: str) -> tuple[list[float], list[float]]:
    """Per-channel ``(mean, std)`` on the [0, 1] scale from ``trainer.datamodule.preprocessing``.

    Args:
        trainer: the Trainer (its ``datamodule`` may be None or lack ``preprocessing``).
        need: the start of the error message: who needs the normalisation and why.

    Raises:
        ValueError: ``need`` followed by what to do, when the datamodule records no mean.

    Example:
        >>> from types import SimpleNamespace
        >>> dm = SimpleNamespace(preprocessing={"mean": [0.5], "std": [0.25]})
        >>> datamodule_normalisation(SimpleNamespace(datamodule=dm), "X needs it")
        ([0.5], [0.25])
    """
    prep = getattr(trainer.datamodule, "preprocessing", None)
    if not prep or prep.get("mean") is None:
        raise ValueError(
            f"{need}: pass mean and std, or use a datamodule with a `preprocessing` mapping (LongTailDataModule "
            f"without a custom eval_transform; got preprocessing={prep!r})"
        )
    return [float(m) for m in prep["mean"]], [float(s) for s in prep["std"]]


def cached_on_device(cache: dict, name: str, value: Any, device: torch.device | str) -> torch.Tensor:
    """``value`` (a tensor, or numbers as float32) on ``device``, copied there once per ``(name, device)`` and kept
    in ``cache``. Per-step callbacks use it for their constants: a copy from pageable host memory at every step
    would wait for the device's queue (a host synchronisation). Empty ``cache`` when the values change.

    Example:
        >>> cache = {}
        >>> a = cached_on_device(cache, "mean", [0.5, 0.25], "cpu")
        >>> a.tolist(), a is cached_on_device(cache, "mean", [9.0], "cpu")
        ([0.5, 0.25], True)
    """
    key = (name, str(torch.device(device)))
    if key not in cache:
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float32)
        cache[key] = tensor.to(device)
    return cache[key]
