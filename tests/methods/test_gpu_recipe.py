"""The GPU recipe options of every method: ``channels_last`` and ``compile_backbone`` (tested on the CPU)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.methods import BBN, DBNMix, LongTailClassifier
from lt_lightning.methods.base import _channels_last_inputs
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)


def loader(paired: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 3
    return DataLoader(TensorDataset(*((x, y, x.flip(0), y.flip(0)) if paired else (x, y))), batch_size=8)


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with the ``eager`` backend: Dynamo traces for real, no C++ build (seconds instead of minutes)."""
    real = torch.compile
    calls = []

    def compile_(fn, **kwargs):
        calls.append(fn.__name__)
        return real(fn, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", compile_)
    return calls


def test_channels_last_converts_weights_and_inputs_and_keeps_outputs_and_keys():
    plain = LongTailClassifier(COUNTS, backbone="resnet20", in_chans=1).eval()
    fast = LongTailClassifier(COUNTS, backbone="resnet20", in_chans=1, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(fast(x), plain(x), atol=1e-5)
    assert list(fast.state_dict()) == list(plain.state_dict())
    seen = []
    probe = _channels_last_inputs(lambda module, x: seen.append(x))
    flat = torch.randn(4, 3)
    probe(None, x)
    probe(None, flat)  # not an image batch: passed unchanged
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and seen[1] is flat


def test_options_are_checked_where_they_enter():
    with pytest.raises(TypeError, match=r"channels_last must be a bool, got 'yes'"):
        LongTailClassifier(COUNTS, in_chans=1, channels_last="yes")
    with pytest.raises(TypeError, match=r"compile_backbone must be a bool, got 1"):
        LongTailClassifier(COUNTS, in_chans=1, compile_backbone=1)


def test_compiled_checkpoint_loads_without_compile_and_back(tmp_path, eager_compile):
    model = LongTailClassifier(COUNTS, in_chans=1, compile_backbone=True, channels_last=True)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, loader())
    assert eager_compile == ["forward", "classifier_features"]
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    keys = list(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    assert not any("_orig_mod" in k for k in keys)
    assert keys == list(LongTailClassifier(COUNTS, in_chans=1).state_dict())

    plain = LongTailClassifier.load_from_checkpoint(path, compile_backbone=False, channels_last=False).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(plain(x), model.eval()(x), atol=1e-5)
    plain_path = tmp_path / "plain.ckpt"
    cpu_trainer(tmp_path).validate(plain, loader(), verbose=False)
    torch.save({"state_dict": plain.state_dict()}, plain_path)
    again = LongTailClassifier(COUNTS, in_chans=1, compile_backbone=True)
    again.load_state_dict(torch.load(plain_path, weights_only=True)["state_dict"])
    again.configure_model()
    assert torch.allclose(again.eval()(x), plain(x), atol=1e-5)


def test_a_deepcopy_runs_its_own_weights(eager_compile):
    model = LongTailClassifier(COUNTS, in_chans=1, compile_backbone=True).eval()
    model.configure_model()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    x = torch.randn(2, 1, 8, 8)
    assert isinstance(twin.__dict__["forward"], functools.partial) and twin.__dict__["forward"].args[0] is twin
    assert torch.equal(twin(x), torch.zeros(2, 3)) and not torch.equal(model(x), torch.zeros(2, 3))


@pytest.mark.parametrize("method", [BBN, DBNMix])
def test_two_branch_methods_compile_their_branches(tmp_path, eager_compile, method):
    model = method(COUNTS, backbone="small_cnn", in_chans=1, compile_backbone=True, channels_last=True)
    cpu_trainer(tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=1).fit(
        model, loader(paired=True), loader()
    )
    assert eager_compile == list(method.IMAGE_ENTRY_POINTS)
    assert not any("_orig_mod" in k for k in model.state_dict())
    head = model.classifier_head()
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(head(model.classifier_features(x)), model(x), atol=1e-5)


def test_a_compiler_failure_names_the_option(tmp_path, monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-c++-compiler",))
    torch._dynamo.reset()
    model = LongTailClassifier(COUNTS, in_chans=1, compile_backbone=True)
    with pytest.raises(RuntimeError, match=r"compile_backbone=True, but torch.compile failed to compile forward"):
        cpu_trainer(tmp_path, limit_train_batches=1).fit(model, loader())
    torch._dynamo.reset()
