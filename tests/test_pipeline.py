"""The pipeline: an experiment's network, diffusion and data, as training, evaluation and sampling use them."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.experiment import load_experiment
from workbench.pipeline import Pipeline, resolve_device

EXPERIMENTS = """\
[images]
dataset  = { name = "shapes", size = 8, n = 32 }
backbone = { name = "unet", channels = 8, channel_mult = [1, 2], groups = 4, num_heads = 2 }

[vectors]
dataset  = { name = "swissroll", n = 32 }
backbone = { name = "mlp", width = 16, depth = 1 }
"""


def test_image_networks_are_laid_out_channels_last_and_compute_the_same(tmp_path):
    file = tmp_path / "experiments.toml"
    file.write_text(EXPERIMENTS)
    pipeline = Pipeline(load_experiment("images", file=file), torch.device("cpu"))
    convolutions = [p for p in pipeline.model.parameters() if p.ndim == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    assert not all(p.is_contiguous() for p in convolutions)  # the layout really changed (not 1x1 only)

    # The same weights in the default layout compute the same function.
    nchw = Pipeline(load_experiment("images", file=file), torch.device("cpu")).model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        for p in nchw.parameters():  # the output layers start at zero; give every path signal
            p.copy_(torch.randn_like(p) * 0.1)
        pipeline.model.load_state_dict(nchw.state_dict())
    # In float64 the two layouts' different summation orders differ by ~1e-15, while a wrongly laid out
    # weight changes the output at order 1: 1e-10 separates them on any CPU (.double() keeps channels_last).
    x, t = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(pipeline.model.double()(x, t), nchw.double()(x, t), rtol=1e-10, atol=1e-10)


def test_vector_networks_and_bf16_on_the_cpu_keep_the_default_layout(tmp_path):
    """Vectors have no convolutions; oneDNN's bf16 convolutions run faster from NCHW (benchmarks/training.py)."""
    file = tmp_path / "experiments.toml"
    file.write_text(EXPERIMENTS)
    for name, overrides in (("vectors", []), ("images", ["train.precision=bf16"])):
        model = Pipeline(load_experiment(name, file=file, overrides=overrides), torch.device("cpu")).model
        assert all(p.is_contiguous() for p in model.parameters()), name


def test_a_streamed_set_holds_out_the_same_examples_as_in_memory_and_never_trains_on_them(tmp_path, png_folder):
    file = tmp_path / "experiments.toml"
    file.write_text(
        f'[lazy]\ndataset = {{ name = "folder", path = "{png_folder}", size = 8, in_memory_limit = 0 }}\n'
        'backbone = { name = "unet", channels = 8, channel_mult = [1], groups = 4 }\n'
        'eval = { holdout = 0.25, samples = 6 }\n'
        '[eager]\nextends = "lazy"\ndataset = { in_memory_limit = 1000 }\n'
    )
    eager_train, eager_held_out = Pipeline(load_experiment("eager", file=file), torch.device("cpu")).load_data()
    lazy_train, lazy_held_out = Pipeline(load_experiment("lazy", file=file), torch.device("cpu")).load_data()
    assert isinstance(lazy_train, torch.utils.data.Dataset) and len(lazy_train) == len(eager_train) == 30
    assert len(eager_held_out) == 10
    assert torch.equal(lazy_held_out, eager_held_out[:6])  # eval.samples of them are read into memory
    streamed = torch.stack([lazy_train[i] for i in range(len(lazy_train))])
    assert torch.equal(streamed, eager_train)
    flat = lambda images: {tuple(image.flatten().tolist()) for image in images}  # noqa: E731
    assert len(flat(eager_train) | flat(eager_held_out)) == 40  # the 40 distinct images, each on one side


def test_auto_picks_cuda_when_there_is_one_and_asking_for_a_missing_gpu_is_a_clear_error():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto") and resolve_device("cpu").type == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
    else:
        with pytest.raises(WorkbenchError, match="'cuda' was asked for, but CUDA is not available") as excinfo:
            resolve_device("cuda")
        assert "--device cpu" in excinfo.value.hint


# --- conditional experiments ------------------------------------------------------------------




def test_a_backbone_that_cannot_take_labels_is_named_in_a_clear_error(tmp_path):
    import types

    import workbench as wb
    from workbench.errors import ConfigError
    from workbench.registry import Registry

    class Plain(wb.Backbone):
        """An MLP without labels."""

        name = "plain"

        def build(self, data_shape, out_channels):
            return torch.nn.Linear(data_shape[0], out_channels)

    module = types.ModuleType("plain_plugin")
    module.register_backbones = wb.hookimpl(lambda register: register(Plain))
    module.register_backbones.__name__ = "register_backbones"
    registry = Registry.load(modules=[("plain_plugin", module)])
    (tmp_path / "experiments.toml").write_text(
        '[cond]\ndataset = { name = "moons", n = 100 }\nbackbone = { name = "plain" }\n'
        "condition = { labels = true, dropout = 0.1 }\n"
    )
    exp = load_experiment("cond", file=tmp_path / "experiments.toml", registry=registry)
    with pytest.raises(ConfigError, match=r"backbone 'plain' \(from plain_plugin\) cannot take class labels"):
        Pipeline(exp, torch.device("cpu"))
    plain = load_experiment("cond", file=tmp_path / "experiments.toml", overrides=["condition.labels=false"], registry=registry)
    Pipeline(plain, torch.device("cpu"))  # unconditional: fine


def test_a_conditional_pipeline_splits_labels_with_the_data(tmp_path):
    (tmp_path / "experiments.toml").write_text(
        '[cond]\ndataset = { name = "circles", n = 200 }\nbackbone = { name = "mlp", width = 8 }\n'
        "condition = { labels = true, dropout = 0.1 }\neval = { holdout = 0.25 }\n"
    )
    exp = load_experiment("cond", file=tmp_path / "experiments.toml")
    pipeline = Pipeline(exp, torch.device("cpu"))
    train, held_out = pipeline.load_data()
    assert len(pipeline.train_labels) == len(train) == 150 and len(pipeline.held_out_labels) == len(held_out) == 50
    # Each example keeps its own label: the circles' labels are their radius (outer 0, inner 1).
    for x, y in ((train, pipeline.train_labels), (held_out, pipeline.held_out_labels)):
        assert torch.equal((x.norm(dim=1) < 0.6).long(), y)
