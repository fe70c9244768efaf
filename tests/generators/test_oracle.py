"""``OracleGenerator``: the true nuisance on [0, 1] images, seeded, on the 1/255 grid."""

import pytest
import torch

from lt_lightning.data.nuisance import BackgroundNuisance
from lt_lightning.generators import OracleGenerator


def test_background_fills_float_noise_zeros():
    # Un-normalised zeros come back as ~1e-7: the oracle rounds to the 1/255 grid before testing for 0.
    out = OracleGenerator("background", {"low": 30, "high": 31})(torch.full((3, 1, 4, 4), 1e-7))
    assert torch.allclose(out * 255, torch.full_like(out, 30.0), atol=1e-4)


def test_rotation_is_seeded_and_keeps_shape_and_range():
    x = torch.rand(5, 1, 8, 8)
    oracle = OracleGenerator("rotation")
    a = oracle(x, generator=torch.Generator().manual_seed(3))
    b = oracle(x, generator=torch.Generator().manual_seed(3))
    c = oracle(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_a_nuisance_instance_is_accepted_and_bad_input_named():
    assert isinstance(OracleGenerator(BackgroundNuisance()).nuisance, BackgroundNuisance)
    with pytest.raises(ValueError, match="nuisance must be one of"):
        OracleGenerator("blur")
    with pytest.raises(TypeError, match="nuisance must be a name or a Nuisance"):
        OracleGenerator(3)
    with pytest.raises(ValueError, match="nuisance_kwargs only apply"):
        OracleGenerator(BackgroundNuisance(), {"high": 3})
