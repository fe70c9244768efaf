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

import importlib
import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

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


def read_checkpoint(path: str | Path, argument: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint file on the CPU (weights only: no code runs), with a clear error for a wrong path.

    Args:
        path: the file.
        argument: the name the user gave the path under, for the error messages.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is not a PyTorch checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{argument} {str(path)!r} does not exist or is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle, zip and torch errors alike mean: not a checkpoint we can read)
        raise ValueError(f"{argument} {str(path)!r} is not a readable PyTorch checkpoint: {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{argument} {str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def checkpoint_module_class(checkpoint: dict[str, Any]) -> str | None:
    """The LightningModule class path a checkpoint records (ours, else the LightningCLI's ``_class_path``)."""
    recorded = (checkpoint.get(METADATA_KEY) or {}).get("module_class")
    return recorded or (checkpoint.get("hyper_parameters") or {}).get("_class_path")


def import_module_class(class_path: str, argument: str = "module_class") -> type[L.LightningModule]:
    """The LightningModule class at ``class_path`` (``package.module.Class``, or a short name of
    ``lt_lightning.methods`` such as ``LDAMDRW``).

    Raises:
        ValueError: it does not import, or is not a LightningModule subclass.

    Example:
        >>> import_module_class("BBN").__name__
        'BBN'
    """
    module_name, _, name = class_path.rpartition(".")
    try:
        owner = importlib.import_module(module_name or "lt_lightning.methods")
        cls = getattr(owner, name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"{argument} {class_path!r} does not import ({err}); give a class path such as "
            "lt_lightning.methods.LDAMDRW or my_package.models.MyModule"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(f"{argument} {class_path!r} is not a LightningModule subclass")
    return cls


def build_module(class_path: str, hyper_parameters: dict[str, Any], argument: str = "module_class") -> Any:
    """A fresh ``class_path`` module from a checkpoint's ``hyper_parameters`` (keys starting with ``_``, which the
    LightningCLI adds, are dropped, and so are those the class's ``__init__`` does not take unless it has
    ``**kwargs``: a subclass records its base class's arguments too). The weights are not loaded: the caller loads
    the checkpoint's, so ``backbone_kwargs.pretrained`` is turned off (no download of weights about to be replaced).
    """
    cls = import_module_class(class_path, argument)
    kwargs = {k: v for k, v in (hyper_parameters or {}).items() if not k.startswith("_")}
    backbone_kwargs = kwargs.get("backbone_kwargs")
    if isinstance(backbone_kwargs, dict) and backbone_kwargs.get("pretrained"):
        kwargs["backbone_kwargs"] = {**backbone_kwargs, "pretrained": False}
    parameters = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}
    # Built inside another module's LightningCLI instantiation (stage 2 loading stage 1), Lightning's
    # save_hyperparameters would record the OUTER module's arguments as this one's: clear that context meanwhile.
    token = _given_hyperparameters.set(None)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"{argument} {class_path!r} cannot be rebuilt from the checkpoint's hyper-parameters: {err}"
        ) from None
    finally:
        _given_hyperparameters.reset(token)


def load_trained_module(path: str | Path, module_class: str | None = None, argument: str = "checkpoint") -> Any:
    """Rebuild the trained LightningModule of a checkpoint from the file alone, weights loaded, in eval mode.

    Args:
        path: a Lightning checkpoint.
        module_class: its class path; default: the one the checkpoint records (every lt_lightning checkpoint, and
            any checkpoint written under the LightningCLI). Needed for other checkpoints.
        argument: the name the user gave the path under, for the error messages.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a Lightning checkpoint, no class recorded or named, or the weights do not fit the class.
    """
    checkpoint = read_checkpoint(path, argument)
    class_path = module_class or checkpoint_module_class(checkpoint)
    if class_path is None:
        raise ValueError(
            f"{argument} {str(path)!r} is not an lt_lightning checkpoint (it records no module class): name its "
            "LightningModule class, e.g. stage1_class: my_package.models.MyModule"
        )
    named = "stage1_class" if module_class else argument  # the error names what the user gave
    module = build_module(class_path, checkpoint.get("hyper_parameters") or {}, named)
    try:
        missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
        problem = "; ".join(
            f"{len(keys)} {kind} keys (e.g. {keys[0]!r})"
            for kind, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
    except RuntimeError as err:  # a shape mismatch
        problem = " ".join(line.strip() for line in str(err).splitlines()[1:3])
    if problem:
        raise ValueError(f"{argument} {str(path)!r} does not hold the weights of {class_path}: {problem}")
    module.on_load_checkpoint(checkpoint)
    return module.eval()
