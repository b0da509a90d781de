"""The Frechet distance against closed forms, and the feature network: deterministic, cached, accurate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.plugins.nets import features
from workbench.distances import frechet_distance
from workbench.plugins.nets.features import FeatureConfig, FeatureNet, build_feature_net, feature_network

pytest.importorskip("sklearn")  # the digits ship with scikit-learn

HELD_OUT = 297  # the last 297 of the 1797 digits: never seen by the fixture's classifier


# --- frechet_distance ------------------------------------------------------------------


def random_spd(d: int, generator: torch.Generator, floor: float = 0.1) -> torch.Tensor:
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T / d + floor * torch.eye(d, dtype=torch.float64)


def random_rotation(d: int, generator: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    return q


def commuting_closed_form(mu1, s1, mu2, s2) -> float:
    """|mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1_i s2_i)) for covariances diagonal in one basis."""
    return float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())


def test_frechet_distance_of_diagonal_covariances_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(6, generator=g, dtype=torch.float64) * 3, torch.rand(6, generator=g, dtype=torch.float64)
    value = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert value == pytest.approx(commuting_closed_form(mu1, s1, mu2, s2), rel=1e-12, abs=1e-12)


def test_frechet_distance_of_commuting_covariances_is_the_closed_form():
    """S1 = Q diag(s1) Q^T, S2 = Q diag(s2) Q^T commute; a zero eigenvalue (singular S1) is allowed."""
    g = torch.Generator().manual_seed(1)
    q = random_rotation(8, g)
    s1, s2 = torch.rand(8, generator=g, dtype=torch.float64), torch.rand(8, generator=g, dtype=torch.float64) * 2
    s1[0] = 0.0
    mu1, mu2 = torch.randn(8, generator=g, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    value = frechet_distance(mu1, q @ torch.diag(s1) @ q.T, mu2, q @ torch.diag(s2) @ q.T)
    # S1 is singular: the square root of a rounding-sized eigenvalue (~4 d u64 |S1||S2|) moves the result by
    # up to 2 sqrt(2 * 4 * d * u64 * |S1| |S2|) ~ 2.4e-7 (d = 8, |S1| <= 1, |S2| <= 2), whatever the CPU.
    bound = 2 * math.sqrt(2 * 4 * 8 * 2**-53 * 2)
    assert value == pytest.approx(commuting_closed_form(mu1, s1, mu2, s2), rel=1e-12, abs=bound)


def test_frechet_distance_in_one_dimension_is_the_gaussians_w2():
    """W_2^2(N(m1, a^2), N(m2, b^2)) = (m1 - m2)^2 + (a - b)^2."""
    value = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-0.5]), torch.tensor([[0.25]]))
    assert value == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_of_2x2_covariances_matches_the_2x2_square_root_trace():
    """For a 2x2 A with positive eigenvalues, tr sqrt(A) = sqrt(tr A + 2 sqrt(det A)): no eigensolver involved."""
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        s1, s2 = random_spd(2, g), random_spd(2, g)
        mu1, mu2 = torch.randn(2, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
        product = s1 @ s2
        trace_sqrt = math.sqrt(product.trace() + 2 * math.sqrt(torch.linalg.det(product)))
        expected = ((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(expected), rel=1e-10)


def test_frechet_distance_of_general_covariances_matches_the_eigenvalues_of_the_product():
    """tr (S1 S2)^(1/2) = sum sqrt(eig(S1 S2)), from the general (non-symmetric) eigensolver."""
    g = torch.Generator().manual_seed(3)
    s1, s2 = random_spd(12, g), random_spd(12, g)
    mu1, mu2 = torch.randn(12, generator=g, dtype=torch.float64), torch.randn(12, generator=g, dtype=torch.float64)
    eigenvalues = torch.linalg.eigvals(s1 @ s2)
    assert eigenvalues.imag.abs().max() < 1e-10
    trace_sqrt = eigenvalues.real.sqrt().sum()
    expected = ((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(expected), rel=1e-10)


def test_frechet_distance_is_symmetric_zero_on_identical_and_rotation_invariant():
    g = torch.Generator().manual_seed(4)
    s1, s2 = random_spd(10, g), random_spd(10, g)
    mu1, mu2 = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    d12 = frechet_distance(mu1, s1, mu2, s2)
    assert d12 > 0.1
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(d12, rel=1e-10)
    q = random_rotation(10, g)
    assert frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(d12, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # a singular covariance (fewer points than dimensions) against itself: still about zero, never negative
    points = torch.randn(4, 10, generator=g, dtype=torch.float64)
    singular = torch.cov(points.T)
    assert 0.0 <= frechet_distance(mu1, singular, mu1, singular) < 1e-6


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="one dimension"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


# --- the feature network --------------------------------------------------------------------


class FirstDigits(wb.Dataset):
    """The digits without their last HELD_OUT examples (so a test can measure accuracy on unseen ones)."""

    name = "first_digits"

    @property
    def shape(self):
        return (1, 8, 8)

    def load(self):
        return wb.build("dataset", "digits").load()[:-HELD_OUT]

    def labels(self):
        return wb.build("dataset", "digits").labels()[:-HELD_OUT]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread when other processes share the 2 cores (threads would spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def digits_net(cache) -> FeatureNet:
    """The default feature network of FirstDigits, trained once for this module."""
    return feature_network(FirstDigits(), FeatureConfig(), cache_dir=cache)


def test_classifier_is_accurate_on_digits_it_never_saw(digits_net):
    digits = wb.build("dataset", "digits")
    images, labels = digits.load()[-HELD_OUT:], digits.labels()[-HELD_OUT:]
    with torch.no_grad():
        predicted = digits_net(images).argmax(dim=1)  # labels 0..9 map to classes 0..9
    accuracy = float((predicted == labels).float().mean())
    assert accuracy > 0.9
    assert digits_net.accuracy is not None and digits_net.accuracy > 0.9  # its own held-out tenth


def test_second_call_loads_from_the_cache_without_training(digits_net, cache, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(features, "train_classifier", no_training)
    loaded = feature_network(FirstDigits(), FeatureConfig(), cache_dir=cache)
    for (name, a), (_, b) in zip(digits_net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.accuracy == digits_net.accuracy and not loaded.training
    # another configuration is another file: it would have to train
    with pytest.raises(AssertionError, match="trained again"):
        feature_network(FirstDigits(), FeatureConfig(feature_dim=32), cache_dir=cache)


def test_cache_file_loads_with_weights_only(digits_net, cache):
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("first_digits-")
    assert not list(cache.glob("*.tmp"))  # the atomic write left nothing behind
    payload = torch.load(files[0], weights_only=True)
    assert payload["num_classes"] == 10 and payload["accuracy"] == digits_net.accuracy
    assert torch.equal(payload["state_dict"]["head.weight"], digits_net.head.weight)


def test_cache_key_depends_on_the_dataset_options_and_the_config():
    digits = wb.build("dataset", "digits")
    key = features.cache_key(digits, FeatureConfig())
    assert key == features.cache_key(wb.build("dataset", "digits"), FeatureConfig())
    assert key != features.cache_key(wb.build("dataset", "digits", seed=1), FeatureConfig())
    assert key != features.cache_key(digits, FeatureConfig(train_steps=501))


def test_training_is_deterministic_and_leaves_the_global_rng_alone(tmp_path):
    config = FeatureConfig(train_steps=20, feature_dim=16)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = feature_network(FirstDigits(), config, cache_dir=tmp_path / "a")
    second = feature_network(FirstDigits(), config, cache_dir=tmp_path / "b")
    assert torch.equal(torch.random.get_rng_state(), before)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    reseeded = FeatureConfig(train_steps=20, feature_dim=16, seed=1)
    other = feature_network(FirstDigits(), reseeded, cache_dir=tmp_path / "c")
    assert not torch.equal(first.head.weight, other.head.weight)


def test_damaged_cache_file_is_replaced(tmp_path):
    config = FeatureConfig(train_steps=5, feature_dim=8)
    path = tmp_path / f"first_digits-{features.cache_key(FirstDigits(), config)}.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="could not be loaded"):
        net = feature_network(FirstDigits(), config, cache_dir=tmp_path)
    assert torch.load(path, weights_only=True)["num_classes"] == 10 and net.trained


def test_cache_directory_comes_from_wb_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("WB_SETTINGS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WB_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert features.default_cache_dir() == tmp_path / "elsewhere" / "features"
    monkeypatch.delenv("WB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert features.default_cache_dir() == tmp_path / "xdg" / "workbench" / "features"


def test_unlabelled_data_get_a_fixed_random_network_and_no_cache(tmp_path):
    swissroll = wb.build("dataset", "swissroll", n=500)
    first = feature_network(swissroll, FeatureConfig(feature_dim=16), cache_dir=tmp_path)
    second = feature_network(swissroll, FeatureConfig(feature_dim=16), cache_dir=tmp_path)
    assert not first.trained and first.accuracy is None
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert not any(tmp_path.iterdir())
    assert features.extract_features(first, swissroll.load()).shape == (500, 16)


def test_labelled_vectors_get_a_trained_mlp(tmp_path):
    moons = wb.build("dataset", "moons", n=2000)
    net = feature_network(moons, FeatureConfig(train_steps=200, feature_dim=16), cache_dir=tmp_path)
    assert isinstance(net.body[1], torch.nn.Linear) and net.trained
    assert net.accuracy > 0.95


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 64, 48), (2, 5, 5), (7,), (2, 3, 4, 5)])
def test_networks_for_every_shape_give_features_of_the_asked_width(shape):
    net = build_feature_net(shape, FeatureConfig(feature_dim=12), num_classes=3)
    x = torch.rand(4, *shape)
    assert net.features(x).shape == (4, 12) and net(x).shape == (4, 3)
    with pytest.raises(ValueError, match="examples of shape"):
        features.extract_features(net, torch.rand(4, 9))
