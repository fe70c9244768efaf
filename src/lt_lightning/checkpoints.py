"""What an lt_lightning checkpoint records beyond Lightning's own keys, and how to read it without the data.

``checkpoint["lt_lightning"]`` holds plain Python types only (so ``torch.load(..., weights_only=True)`` reads it):

- ``module_class``: the class path of the LightningModule (``lt_lightning.methods.LDAMDRW``, or a user subclass), so
  a later stage rebuilds the right method from the file alone;
- ``class_names`` and ``class_counts``: the training classes, head to tail in label order;
- ``preprocessing``: how raw images became inputs — ``mean`` / ``std`` (on the [0, 1] scale), ``image_size`` (the
  square side the model saw, or None for the dataset's native side), ``in_chans`` and the ``dataset`` name — or None
  when the training run used its own ``eval_transform`` (then new images need ``mean`` / ``std`` given explicitly).

Example:
    >>> import lightning as L
    >>> meta = checkpoint_metadata(L.LightningModule())
    >>> meta["module_class"], meta["preprocessing"]
    ('lightning.pytorch.core.module.LightningModule', None)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

METADATA_KEY = "lt_lightning"


def checkpoint_metadata(module: Any) -> dict[str, Any]:
    """The ``checkpoint["lt_lightning"]`` entry for ``module`` (plain types only)."""
    counts = getattr(module, "class_counts", None)
    names = getattr(module, "class_names", None)
    return {
        "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "class_counts": None if counts is None else [int(c) for c in counts],
        "class_names": None if names is None else [str(n) for n in names],
        "preprocessing": getattr(module, "preprocessing", None),
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file on the CPU (weights only: no code runs), with a clear error for a wrong path.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a PyTorch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path {str(path)!r} does not exist or is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle, zip and torch errors alike mean: not a checkpoint we can read)
        raise ValueError(f"ckpt_path {str(path)!r} is not a readable PyTorch checkpoint: {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"ckpt_path {str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint
