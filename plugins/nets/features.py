"""The `fd` metric's feature network, trained on the dataset's own labels (it lives with the metric).

FID (Heusel et al. 2017) fits a Gaussian to the Inception-v3 features of the
samples and one to those of real images, and reports the Frechet distance
between the two fits. Inception needs a download and was made for 299x299
photographs; the workbench's data are 8x8 digits, 32x32 shapes and 2-D points.
So the workbench makes its own feature network, the same way every time:

- a small classifier for the dataset's labels (`Dataset.labels()`: the digit,
  the shape): a CNN with batch normalisation for images [C, H, W] (inputs
  larger than 32x32 are first average-pooled to 32x32), an MLP for anything
  else (flattened);
- trained on CPU for a fixed number of steps, with a fixed seed (Adam, cosine
  learning-rate decay), on 90% of the labelled set; the other 10% measures its
  accuracy, which says whether its features mean anything. It is trained once
  per dataset and configuration, then loaded from the cache;
- features = its penultimate layer (`feature_dim` ReLU units), which has to
  separate the classes, so it responds to what makes a digit a digit. They
  are computed on the evaluation's device, in eval mode.

A dataset without labels (or with one class, or one that streams from disk)
gets a fixed, seeded, randomly initialised network of the same architecture
instead. Random features still move with noise and with collapse, but they are
not tuned to what distinguishes real examples: that distance is weaker, on a
much smaller scale, and a different number from the trained one.

Trained networks are cached on disk, keyed by a hash of the dataset component
(its class and options), the network configuration, the architecture version,
and the workbench and torch versions: a second evaluation loads the file
instead of training again, and two runs of one experiment measure with the same
network. The cache directory is `<cache_dir>/features`, `cache_dir` being the
workbench setting (`WB_CACHE_DIR`; default `~/.cache/workbench`). Files are
`torch.save`d state dicts with plain metadata, written atomically and loaded
with `weights_only=True`.

The values this gives compare only within the workbench, between runs of one
dataset measured with the same network and the same number of samples. They
are not FID and cannot be compared with published FIDs: a different network,
different features, a different scale. Like FID, the estimate is biased
upwards by finite sample sizes (the mean term alone by tr(sigma) (1/N + 1/M)
for sets of N and M; Chong & Forsyth 2020): two independent sets of real data
score above zero, and fewer samples score higher.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from workbench.components import Dataset
from workbench.distances import frechet_distance

ARCHITECTURE = "features-v2"
"""Part of the cache key: change it whenever the network or its training changes."""

MAX_RESOLUTION = 32
"""Images larger than this (per side) are average-pooled down to it before the CNN."""


@dataclass(frozen=True)
class FeatureConfig:
    """How the feature network is built and trained; every field is part of the cache key."""

    feature_dim: int = 64
    train_steps: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    validation_fraction: float = 0.1


class FeatureNet(nn.Module):
    """`body` maps examples to features [B, feature_dim]; `head` (None when untrained) to class logits."""

    def __init__(self, shape: tuple[int, ...], feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.body = conv_body(self.shape, feature_dim) if len(self.shape) == 3 else mlp_body(self.shape, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes) if num_classes >= 2 else None
        self.accuracy: float | None = None  # held-out accuracy of the classifier, when trained

    @property
    def trained(self) -> bool:
        """Whether this is a trained classifier (False for the random network of unlabelled data)."""
        return self.accuracy is not None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RuntimeError("this feature network has no classifier head (it was not trained)")
        return self.head(self.body(x))


def conv_body(shape: tuple[int, int, int], feature_dim: int) -> nn.Sequential:
    """Conv 3x3 (16 channels), stride-2 convs (32) until the map is at most 4x4, then a linear layer of features.

    Small on purpose, so that it trains in seconds on a laptop CPU. Batch
    normalisation makes it learn in a few hundred steps (the shapes need it);
    in eval mode it uses the running statistics of the training data, so the
    features of one example do not depend on the rest of its batch.
    """
    channels, height, width = shape
    layers: list[nn.Module] = []
    if max(height, width) > MAX_RESOLUTION:
        height, width = min(height, MAX_RESOLUTION), min(width, MAX_RESOLUTION)
        layers.append(nn.AdaptiveAvgPool2d((height, width)))
    layers += [nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
    channels = 16
    while max(height, width) > 4:
        layers += [nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()]
        channels, height, width = 32, (height + 1) // 2, (width + 1) // 2
    layers += [nn.Flatten(), nn.Linear(channels * height * width, feature_dim), nn.ReLU()]
    return nn.Sequential(*layers)


def mlp_body(shape: tuple[int, ...], feature_dim: int) -> nn.Sequential:
    """Flatten, two hidden layers of 128, then a layer of features."""
    size = math.prod(shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(size, 128), nn.ReLU(),
        nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, feature_dim), nn.ReLU(),
    )


def build_feature_net(shape: tuple[int, ...], config: FeatureConfig, num_classes: int) -> FeatureNet:
    """A freshly initialised network, the same for the same seed (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return FeatureNet(shape, config.feature_dim, num_classes)


def random_feature_net(shape: tuple[int, ...], config: FeatureConfig) -> FeatureNet:
    """The fallback for unlabelled data: the seeded initialisation, untrained, without a head."""
    return build_feature_net(shape, config, num_classes=0).eval()


def train_classifier(net: FeatureNet, data: torch.Tensor, targets: torch.Tensor, config: FeatureConfig) -> float:
    """Train `net` in place to predict `targets` (0..K-1) from `data`; returns its held-out accuracy.

    Deterministic on CPU: the split and the batches are drawn from a generator
    seeded with `config.seed`. A fraction `validation_fraction` of the
    examples is held out to measure the accuracy and never trained on.
    """
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(data), generator=generator)
    n_val = max(1, round(len(data) * config.validation_fraction))
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise ValueError(f"{len(data)} labelled examples are too few to train a feature network")

    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train_steps)
    net.train()
    with torch.enable_grad():  # metrics run under no_grad
        for _ in range(config.train_steps):
            batch = train[torch.randint(len(train), (config.batch_size,), generator=generator)]
            loss = F.cross_entropy(net(data[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    with torch.no_grad():
        predictions = torch.cat([net(chunk).argmax(dim=1) for chunk in data[val].split(1024)])
    return float((predictions == targets[val]).float().mean())


# --- the cache -----------------------------------------------------------------------


def cache_key(dataset: Dataset, config: FeatureConfig) -> str:
    """A hash of what determines the trained network: dataset class and options, config, versions."""
    from workbench import __version__

    kind = type(dataset)
    description = {
        "dataset": {"class": f"{kind.__module__}.{kind.__qualname__}", "name": dataset.name,
                    "options": dataset.model_dump(mode="json")},
        "network": asdict(config),
        "architecture": ARCHITECTURE,
        "workbench": __version__,
        "torch": torch.__version__,
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """`<cache_dir>/features`, `cache_dir` being the workbench setting (WB_CACHE_DIR)."""
    from workbench.settings import load_settings

    return Path(load_settings().cache_dir).expanduser() / "features"


def feature_network(
    dataset: Dataset,
    config: FeatureConfig = FeatureConfig(),
    cache_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> FeatureNet:
    """The feature network of `dataset`, in eval mode on CPU: loaded from the cache, else trained and cached.

    A dataset without usable labels gets the seeded random network, which is
    not cached (building it is instant). `cache_dir` defaults to
    `default_cache_dir()`; `progress(message)` hears about training.
    """
    labels = dataset.labels()
    if labels is None or len(torch.unique(labels)) < 2:
        return random_feature_net(dataset.shape, config)

    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = directory / f"{dataset.name}-{cache_key(dataset, config)}.pt"
    if path.is_file():
        try:
            return _load(path, dataset.shape, config)
        except Exception as exc:  # a damaged or foreign file: train again and replace it
            warnings.warn(f"feature network cache {path} could not be loaded ({exc}); training it again", stacklevel=2)

    data = dataset.load()
    if not isinstance(data, torch.Tensor):  # a set streamed from disk: not held in memory to train on
        return random_feature_net(dataset.shape, config)
    if len(labels) != len(data):
        raise ValueError(f"dataset '{dataset.name}' has {len(data)} examples but {len(labels)} labels")
    if progress:
        progress(f"training the feature network of '{dataset.name}' ({config.train_steps} steps, once: it is cached)")
    classes, targets = torch.unique(labels, return_inverse=True)
    net = build_feature_net(dataset.shape, config, num_classes=len(classes))
    net.accuracy = train_classifier(net, data.float().cpu(), targets.cpu(), config)
    if progress:
        progress(f"feature network: {net.accuracy:.1%} accuracy on its held-out {config.validation_fraction:.0%}")
    try:
        _save(net, path)
    except OSError as exc:  # an unwritable cache costs time, not correctness
        warnings.warn(f"could not cache the feature network in {path} ({exc}); set WB_CACHE_DIR", stacklevel=2)
    return net


def _save(net: FeatureNet, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then os.replace: never a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": 1,
        "architecture": ARCHITECTURE,
        "num_classes": net.head.out_features,
        "accuracy": net.accuracy,
        "state_dict": net.state_dict(),
    }
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # unique per writer
    try:
        with open(temporary, "xb") as file:
            torch.save(payload, file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _load(path: Path, shape: tuple[int, ...], config: FeatureConfig) -> FeatureNet:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net = FeatureNet(shape, config.feature_dim, int(payload["num_classes"]))
    net.load_state_dict(payload["state_dict"])
    net.accuracy = payload["accuracy"]
    return net.eval()


# --- features and their Frechet distance ------------------------------------------------


def extract_features(net: FeatureNet, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Features [N, feature_dim] of examples x [N, *shape], in float64; moves `net` to x's device."""
    if tuple(x.shape[1:]) != net.shape:
        raise ValueError(f"the feature network takes examples of shape {net.shape}, not {tuple(x.shape[1:])}")
    net = net.to(x.device)
    with torch.no_grad():
        return torch.cat([net.features(chunk.float()).double() for chunk in x.split(batch_size)])


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] (N >= 2), in float64."""
    if len(features) < 2:
        raise ValueError(f"a covariance needs at least 2 examples, got {len(features)}")
    features = features.to(torch.float64)
    return features.mean(dim=0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


def feature_frechet_distance(net: FeatureNet, a: torch.Tensor, b: torch.Tensor, batch_size: int = 1024) -> float:
    """Frechet distance between Gaussian fits of the features of two example sets."""
    mu_a, sigma_a = gaussian_fit(extract_features(net, a, batch_size))
    mu_b, sigma_b = gaussian_fit(extract_features(net, b, batch_size))
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
