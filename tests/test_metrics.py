"""The `fd` metric on the digits: real data score about zero, damaged samples clearly more."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.errors import ConfigError
from workbench.components import Evaluation
from workbench.evaluation import evaluate, make_evaluation
from workbench.exact import GaussianMixtureDenoiser
from workbench.plugins.nets.features import FeatureConfig, cache_key, extract_features, feature_network

pytest.importorskip("sklearn")  # the digits ship with scikit-learn

N = 800  # examples per compared set
K = 200  # points of the exact model (each sampler step costs K distances per sample)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread when other processes share the 2 cores (threads would spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory):
    """The metric finds its cache through the settings: WB_CACHE_DIR points at a fresh folder."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WB_CACHE_DIR", str(path))
        patch.delenv("WB_SETTINGS", raising=False)
        yield path


@pytest.fixture(scope="module")
def digits():
    return wb.build("dataset", "digits")


@pytest.fixture(scope="module")
def real(digits) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of N real digits (the dataset's order is already a seeded shuffle)."""
    images = digits.load()
    return images[:N], images[N : 2 * N]


def diffusion(T: int = 40) -> wb.Diffusion:
    return wb.Diffusion(wb.build("scheduler", "linear", timesteps=T).betas(), "eps", "fixed_small")


def stand_in_model(x_t, t):
    raise AssertionError("the samples were given: the model must not be called")


def fd_of(samples: torch.Tensor, data: torch.Tensor, dataset, **options) -> float:
    """The `fd` metric through `evaluate`, with the samples set on a real Evaluation."""
    evaluation = Evaluation(
        model=stand_in_model, diffusion=diffusion(), data=data, levels=17, sampler=wb.build("sampler", "ddpm"),
        num_samples=len(samples), dataset=dataset, samples_given=samples,
    )
    return evaluate([wb.build("metric", "fd", **options)], evaluation).values["fd"]


@pytest.fixture(scope="module")
def scores(digits, real) -> dict[str, float]:
    a, b = real
    g = torch.Generator().manual_seed(0)
    noised = {sigma: (a + sigma * torch.randn(a.shape, generator=g)).clamp(-1, 1) for sigma in (0.2, 0.4, 0.8)}
    pixels = torch.randperm(64, generator=g)
    return {
        "identical": fd_of(b, b, digits),
        "halves": fd_of(a, b, digits),
        **{f"noise {sigma}": fd_of(x, b, digits) for sigma, x in noised.items()},
        "shuffled pixels": fd_of(a.flatten(1)[:, pixels].reshape(a.shape), b, digits),
        "collapsed": fd_of(a[:1].expand(N, -1, -1, -1), b, digits),
    }


def test_identical_sets_score_zero(scores):
    assert abs(scores["identical"]) < 1e-6


def test_two_halves_of_the_real_data_score_low(scores, digits, real):
    """Low against the spread of the features themselves: under 3% of their total variance."""
    features = extract_features(feature_network(digits), real[1])
    total_variance = float(torch.cov(features.T).trace())
    assert 0 < scores["halves"] < 0.03 * total_variance


def test_noise_raises_the_distance_and_more_noise_raises_it_more(scores):
    assert scores["noise 0.2"] > 1.3 * scores["halves"]
    assert scores["noise 0.4"] > 3 * scores["halves"]
    assert scores["noise 0.2"] < scores["noise 0.4"] < scores["noise 0.8"]


def test_shuffled_pixels_score_far_worse(scores):
    assert scores["shuffled pixels"] > 20 * scores["halves"]


def test_a_collapsed_set_scores_far_worse(scores):
    assert scores["collapsed"] > 20 * scores["halves"]


def test_the_metric_is_repeatable(scores, digits, real):
    assert fd_of(*real, digits) == scores["halves"]


def test_samples_drawn_by_a_sampler_from_an_exact_model():
    """The exact denoiser of K training digits (point masses) reproduces them: as close as real data.

    The model of noised digits yields noised samples, which score clearly worse.
    Here nothing is given but the model: the Evaluation draws the samples itself.
    """
    digits = wb.build("dataset", "digits")
    images = digits.load()
    train, held_out = images[:K], images[N : 2 * N]
    noisy = (train + 0.5 * torch.randn(train.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    process = diffusion()
    results = {}
    for label, means in (("exact", train), ("noisy", noisy)):
        model, sampler = GaussianMixtureDenoiser(process, means), wb.build("sampler", "ddim", steps=10)
        evaluation = Evaluation(
            model=model, diffusion=process, data=held_out, levels=17, sampler=sampler, num_samples=K, seed=3,
            dataset=digits, draw=lambda: wb.draw_samples(sampler, model, process, (K, 1, 8, 8), torch.Generator().manual_seed(3)),
        )
        results[label] = evaluate([wb.build("metric", "fd")], evaluation).values["fd"]
        assert evaluation.samples.shape == (K, 1, 8, 8)
    assert results["noisy"] > 2 * results["exact"]
    # the exact model's samples are training digits, drawn with replacement (so some repeat):
    # a little further from the held-out digits than the K distinct training digits themselves
    assert results["exact"] < 2 * fd_of(train, held_out, digits)


def test_make_evaluation_hands_the_dataset_to_the_metric(tmp_path, monkeypatch):
    """An unlabelled vector set (the swiss roll) through the experiment's own evaluation: a random network."""
    from workbench.experiment import load_experiment
    from workbench.pipeline import Pipeline

    (tmp_path / "experiments.toml").write_text(
        '[roll]\ndescription = "fd on the swiss roll"\nseed = 0\n'
        'dataset = { name = "swissroll", n = 2000 }\nscheduler = { name = "linear", timesteps = 40 }\n'
        'backbone = { name = "mlp", width = 16, depth = 1 }\nsampler = { name = "ddpm" }\n'
        'eval = { samples = 200, holdout = 0.25, metrics = ["fd"] }\n'
    )
    exp = load_experiment("roll", file=tmp_path / "experiments.toml")
    pipeline = Pipeline(exp, torch.device("cpu"))
    train, held_out = pipeline.load_data()
    evaluation = make_evaluation(pipeline, stand_in_model, held_out)
    assert evaluation.dataset == exp.dataset
    evaluation.samples_given = train[:500]
    real = evaluate([wb.build("metric", "fd")], evaluation).values["fd"]
    evaluation.samples_given = train[:500] + 0.3 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert evaluate([wb.build("metric", "fd")], evaluation).values["fd"] > 2 * real


def test_bad_options_and_unusable_evaluations_are_config_errors(digits, real):
    with pytest.raises(ConfigError, match="metric 'fd': option 'feature_dim'"):
        wb.build("metric", "fd", feature_dim=1)
    with pytest.raises(ConfigError, match="option 'train_steps'"):
        wb.build("metric", "fd", train_steps=0)
    with pytest.raises(ConfigError, match="needs the experiment's dataset"):
        fd_of(real[0], real[1], dataset=None)
    with pytest.raises(ConfigError, match="at least 2"):
        fd_of(real[0][:1], real[1], digits)
    with pytest.raises(ConfigError, match="held-out data"):
        fd_of(real[0], real[1][:1], digits)


def test_options_reach_the_feature_network(digits, real, cache_dir):
    """Another feature width is another network (trained and cached beside the default one)."""
    config = FeatureConfig(feature_dim=8, train_steps=10)
    path = cache_dir / "features" / f"digits-{cache_key(digits, config)}.pt"
    assert not path.exists()
    fd_of(*real, digits, feature_dim=8, train_steps=10)
    assert path.is_file()
    assert feature_network(digits, config).features(real[0][:3]).shape == (3, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_features_on_the_gpu_agree_with_the_cpu(digits, real):
    """Held-out data and samples on the GPU: the network follows them there (TF32 convolutions allowed for)."""
    cpu = fd_of(*real, digits)
    gpu = fd_of(real[0].cuda(), real[1].cuda(), digits)
    assert gpu == pytest.approx(cpu, rel=2e-2)


def test_precision_and_recall_see_a_missing_mode_and_share_one_computation():
    """Two separated modes of data: samples of both score high on both; samples of one keep their precision
    and lose half the recall (k = 3 balls: a mode's points cover themselves, never the other mode)."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-0.5, 0.0], [0.5, 0.0]])

    def draw(n, modes):
        return centres[torch.randint(0, modes, (n,), generator=g)] + 0.05 * torch.randn(n, 2, generator=g)

    data = draw(2000, 2)

    def scores(samples):
        evaluation = Evaluation(
            model=stand_in_model, diffusion=diffusion(), data=data, levels=None, sampler=wb.build("sampler", "ddpm"),
            num_samples=len(samples), samples_given=samples,
        )
        values = evaluate([wb.build("metric", "precision"), wb.build("metric", "recall")], evaluation).values
        assert len(evaluation.memo) == 1  # one neighbourhood computation served both
        return values

    both = scores(draw(2000, 2))
    assert both["precision"] > 0.85 and both["recall"] > 0.85
    one = scores(draw(2000, 1))
    assert one["precision"] > 0.85 and one["recall"] < 0.55
    assert wb.build("metric", "precision").higher_is_better and wb.build("metric", "recall").higher_is_better


# --- conditional runs: accuracy and fd per class ---------------------------------------------


def conditional_evaluation(digits, samples, labels, data, data_labels) -> Evaluation:
    return Evaluation(
        model=stand_in_model, diffusion=diffusion(), data=data, levels=17, sampler=wb.build("sampler", "ddpm"),
        num_samples=len(samples), dataset=digits, samples_given=samples, labels=labels, data_labels=data_labels,
        class_names=digits.class_names,
    )


def test_accuracy_is_the_share_the_classifier_assigns_to_the_class_asked_for(digits):
    images, labels = digits.load()[:N], digits.class_labels()[:N]
    net = feature_network(digits, FeatureConfig())
    with torch.no_grad():
        predicted = net(images).argmax(dim=1)
    # Real digits asked for their own class: exactly the classifier's agreement with the labels.
    evaluation = conditional_evaluation(digits, images, labels, images, labels)
    results = evaluate([wb.build("metric", "accuracy")], evaluation)
    assert results.values["accuracy"] == pytest.approx(float((predicted == labels).double().mean()), abs=1e-12)
    table = results.artifacts["accuracy.json"]
    for k, name in enumerate(digits.class_names):
        mine = labels == k
        assert table["per_class"][name] == pytest.approx(float((predicted[mine] == k).double().mean()), abs=1e-12)
    assert results.values["accuracy"] > 0.9  # a working classifier of real digits
    # Asked for the next class instead: the classifier disagrees almost always.
    wrong = conditional_evaluation(digits, images, (labels + 1) % 10, images, labels)
    assert evaluate([wb.build("metric", "accuracy")], wrong).values["accuracy"] < 0.1
    # fd per class: each class's samples against that class's data (here the same images: 0).
    fd = evaluate([wb.build("metric", "fd")], evaluation)
    per_class = fd.artifacts["fd_per_class.json"]["per_class"]
    assert set(per_class) == set(digits.class_names) and max(abs(v) for v in per_class.values()) < 1e-6


def test_accuracy_of_an_unconditional_run_is_a_clear_error(digits, real):
    evaluation = Evaluation(
        model=stand_in_model, diffusion=diffusion(), data=real[1], levels=17, sampler=wb.build("sampler", "ddpm"),
        num_samples=N, dataset=digits, samples_given=real[0],
    )
    with pytest.raises(ConfigError, match="not conditional"):
        evaluate([wb.build("metric", "accuracy")], evaluation)
