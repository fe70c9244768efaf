"""save_generator / load_generator: round trip, NuisanceMUNIT checkpoints, the GIT callback's path, bad files."""

import pytest
import torch

from lt_lightning.callbacks import GenerativeInvarianceTransfer
from lt_lightning.generators import MUNIT_CONFIGS, MUNITGenerator, load_generator, save_generator
from lt_lightning.methods import NuisanceMUNIT


def _tiny() -> MUNITGenerator:
    return MUNITGenerator(1, 8, **MUNIT_CONFIGS["tiny"]["generator"])


def _same_output(a: MUNITGenerator, b: MUNITGenerator, x: torch.Tensor) -> bool:
    return torch.equal(
        a.eval()(x, generator=torch.Generator().manual_seed(7)), b(x, generator=torch.Generator().manual_seed(7))
    )


def test_round_trip_gives_identical_output(tmp_path):
    g = _tiny()
    path = save_generator(g, tmp_path / "sub" / "generator.pt")
    h = load_generator(path)
    assert not h.training and h.config == g.config and (h.in_chans, h.image_size) == (1, 8)
    assert _same_output(g, h, torch.rand(5, 1, 8, 8))
    assert path.stat().st_size < 1_000_000  # config + 160 k float32 weights, no optimiser state


def test_loads_the_generator_from_a_nuisance_munit_checkpoint(tmp_path):
    module = NuisanceMUNIT(config="tiny", image_size=8, mean=[0.0], std=[1.0])
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    assert _same_output(module.generator_a, load_generator(tmp_path / "last.ckpt"), torch.rand(3, 1, 8, 8))


def test_the_git_callback_loads_a_generator_file_and_checks_its_geometry(tmp_path):
    path = save_generator(_tiny(), tmp_path / "generator.pt")
    git = GenerativeInvarianceTransfer(str(path), mean=[0.5], std=[0.5], start_epoch=0)
    assert isinstance(git.generator, MUNITGenerator)
    from lt_lightning.callbacks.git import _check_generator_geometry

    with pytest.raises(ValueError, match="takes 1-channel images but the data has 3"):
        _check_generator_geometry(git.generator, 3, None)
    with pytest.raises(ValueError, match="built for 8x8 images but the data is 28x28"):
        _check_generator_geometry(git.generator, 1, {"image_size": 28})


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_generator(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt.*not a readable generator file"):
        load_generator(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt.*neither a generator file"):
        load_generator(tmp_path / "foreign.pt")
    payload = torch.load(save_generator(_tiny(), tmp_path / "g.pt"), weights_only=True)
    payload["state_dict"].pop(next(iter(payload["state_dict"])))
    torch.save(payload, tmp_path / "truncated.pt")
    with pytest.raises(ValueError, match="truncated.pt.*do not match"):
        load_generator(tmp_path / "truncated.pt")
    with pytest.raises(TypeError, match="needs a MUNITGenerator"):
        save_generator(torch.nn.Linear(1, 1), tmp_path / "x.pt")
