"""The mlp backbone's Fourier features of the input (the rest of the mlp is in test_backbones.py)."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.errors import ConfigError
from workbench.plugins.nets.mlp import fourier_features


def test_fourier_features_match_the_closed_form():
    x = torch.tensor([[0.25, -0.5], [0.1, 0.9]], dtype=torch.float64)
    features = fourier_features(x, 3)
    assert features.shape == (2, 2 * (1 + 2 * 3))
    for row in range(2):
        expected = list(x[row].tolist())
        args = [math.pi * 2**j * x[row, d].item() for d in range(2) for j in range(3)]  # coordinate-major
        expected += [math.sin(a) for a in args] + [math.cos(a) for a in args]
        assert features[row].tolist() == pytest.approx(expected, abs=1e-12)


def test_no_fourier_features_is_the_input_itself():
    x = torch.randn(4, 3)
    assert fourier_features(x, 0) is x


def test_default_mlp_is_unchanged(registry):
    """fourier_features = 0 (the default) builds the same parameters as before: old checkpoints load."""
    model = registry.build("backbone", "mlp", width=16, depth=2).build((2,), 2)
    assert model.input.in_features == 2
    with_features = registry.build("backbone", "mlp", width=16, depth=2, fourier_features=5).build((2,), 2)
    assert with_features.input.in_features == 2 * (1 + 2 * 5)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert {name: p.shape for name, p in with_features.named_parameters() if name != "input.weight"} == {
        name: shape for name, shape in shapes.items() if name != "input.weight"
    }


@pytest.mark.parametrize("dim", [2, 5])
def test_mlp_with_fourier_features_trains_every_parameter(registry, dim):
    torch.manual_seed(0)
    model = registry.build("backbone", "mlp", width=32, depth=2, time_embed_dim=16, fourier_features=4).build(
        (dim,), 2 * dim
    )
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(7, dim, generator=g), torch.randint(0, 1000, (7,), generator=g)
    with torch.no_grad():  # give the zero-initialised layers weights, so that every path carries signal
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    out = model(x, t)
    assert out.shape == (7, 2 * dim)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # Each example sees only its own coordinates (no statistics across the batch).
    torch.testing.assert_close(model(x[2:3], t[2:3]), out[2:3])


def test_fourier_features_separate_nearby_points():
    """The point of the features: two points 0.03 apart (the swiss roll's thickness) differ by O(1) in some feature."""
    a = torch.tensor([[0.30, -0.20]])
    b = a + torch.tensor([[0.03, 0.0]])
    raw = (a - b).abs().max().item()
    lifted = (fourier_features(a, 5) - fourier_features(b, 5)).abs().max().item()
    assert raw == pytest.approx(0.03) and lifted > 0.5  # the top frequency, 16 pi: 16 pi 0.03 = 1.5 radians


def test_parameter_count_with_fourier_features(registry):
    backbone = registry.build("backbone", "mlp", width=16, depth=2, fourier_features=5)
    assert backbone.parameter_count((3,), 6) == sum(p.numel() for p in backbone.build((3,), 6).parameters())


@pytest.mark.parametrize("value", [-1, 17])
def test_fourier_features_out_of_range_is_a_config_error(registry, value):
    with pytest.raises(ConfigError, match="fourier_features"):
        registry.build("backbone", "mlp", fourier_features=value)
