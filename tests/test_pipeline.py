"""The pipeline: an experiment's network, diffusion and data, as training, evaluation and sampling use them."""

from __future__ import annotations

import torch

from workbench.experiment import load_experiment
from workbench.pipeline import Pipeline

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
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(pipeline.model(x, t), nchw(x, t), rtol=1e-4, atol=1e-5)


def test_vector_networks_and_bf16_on_the_cpu_keep_the_default_layout(tmp_path):
    """Vectors have no convolutions; oneDNN's bf16 convolutions run faster from NCHW (benchmarks/training.py)."""
    file = tmp_path / "experiments.toml"
    file.write_text(EXPERIMENTS)
    for name, overrides in (("vectors", []), ("images", ["train.precision=bf16"])):
        model = Pipeline(load_experiment(name, file=file, overrides=overrides), torch.device("cpu")).model
        assert all(p.is_contiguous() for p in model.parameters()), name
