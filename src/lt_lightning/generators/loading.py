"""Save and load learned GIT generators.

``save_generator(generator, path)`` writes a small file: ``{"format": "lt_lightning.munit_generator", "version": 1,
"config": <MUNITGenerator arguments>, "state_dict": <tensors>}``. ``load_generator(path)`` reads it back with
``torch.load(weights_only=True)`` (no pickled code runs) and also accepts a ``NuisanceMUNIT`` Lightning checkpoint
(its ``munit_generator_config`` entry and the ``generator_a.*`` weights). The result is in eval mode, on the CPU.

Example:
    >>> import tempfile, torch
    >>> from lt_lightning.generators import MUNITGenerator
    >>> g = MUNITGenerator(1, 8, dim=8, mlp_dim=16, n_downsample=1, n_res=1, style_downsample=2)
    >>> path = tempfile.mkdtemp() + "/generator.pt"
    >>> _ = save_generator(g, path)
    >>> h = load_generator(path)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> torch.equal(g(x, generator=torch.Generator().manual_seed(0)), h(x, generator=torch.Generator().manual_seed(0)))
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lt_lightning.generators.munit import MUNITGenerator

FORMAT = "lt_lightning.munit_generator"
VERSION = 1
CHECKPOINT_CONFIG_KEY = "munit_generator_config"  # written by NuisanceMUNIT.on_save_checkpoint
CHECKPOINT_PREFIX = "generator_a."


def generator_payload(generator: MUNITGenerator) -> dict[str, Any]:
    """The dictionary ``save_generator`` writes (CPU tensors)."""
    if not isinstance(generator, MUNITGenerator):
        raise TypeError(f"save_generator needs a MUNITGenerator, got {type(generator).__name__}")
    state = {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()}
    return {"format": FORMAT, "version": VERSION, "config": dict(generator.config), "state_dict": state}


def save_generator(generator: MUNITGenerator, path: str | os.PathLike) -> Path:
    """Write ``generator`` (config + weights) to ``path`` (parent folders created); returns the path."""
    payload = generator_payload(generator)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> MUNITGenerator:
    """A ``MUNITGenerator`` from a ``save_generator`` file or a ``NuisanceMUNIT`` checkpoint, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not readable as either format (named in the message).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"generator file {str(path)!r} does not exist")
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt, truncated, not a torch file, or holding pickled objects
        raise ValueError(
            f"{str(path)!r} is not a readable generator file (save_generator / NuisanceMUNIT checkpoint): {err}"
        ) from err
    config, state = _config_and_state(content, path)
    generator = MUNITGenerator(**config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{str(path)!r}: the weights do not match the recorded generator config {config}: {err}"
        ) from err
    return generator.eval()


def _config_and_state(content: Any, path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if isinstance(content, dict) and content.get("format") == FORMAT:
        if content.get("version") != VERSION:
            raise ValueError(f"{str(path)!r} has generator format version {content.get('version')}, expected {VERSION}")
        return dict(content["config"]), content["state_dict"]
    if isinstance(content, dict) and CHECKPOINT_CONFIG_KEY in content and "state_dict" in content:
        state = {
            k[len(CHECKPOINT_PREFIX) :]: v for k, v in content["state_dict"].items() if k.startswith(CHECKPOINT_PREFIX)
        }
        return dict(content[CHECKPOINT_CONFIG_KEY]), state
    raise ValueError(
        f"{str(path)!r} is neither a generator file written by save_generator nor a NuisanceMUNIT checkpoint"
    )
