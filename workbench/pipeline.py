"""An experiment's components assembled into things that run: data, diffusion, model, sampler.

Training, evaluation and `Run.sample` all build from here, so a checkpoint
always meets the same network it was trained with.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from workbench.components import Sampler
from workbench.diffusion import Diffusion
from workbench.errors import WorkbenchError
from workbench.experiment import Experiment


def resolve_device(requested: str | None) -> torch.device:
    """'auto' -> CUDA when available, else CPU; asking for CUDA without it is an error."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"device '{requested}' was asked for, but CUDA is not available here", hint="use --device cpu")
    return device


def memory_format(shape: tuple[int, ...], device: torch.device, precision: str = "fp32") -> torch.memory_format:
    """How the 4-D weights of a network for examples of `shape` are laid out.

    Images get channels_last (NHWC): oneDNN on the CPU and cuDNN on GPUs run
    fp32 convolutions in that layout natively, so each convolution skips two
    layout conversions (on the CPU a training step of the built-in U-Net runs
    about 1.1-1.2x faster; benchmarks/training.py measures it). The exception is
    bf16 autocast on the CPU, where oneDNN's bf16 kernels run faster from NCHW
    (channels_last measured 15-20% slower there). Only 4-D parameters change;
    a network without convolutions is left as it is, and so is the math.
    """
    if len(shape) != 3 or (device.type == "cpu" and precision == "bf16"):
        return torch.preserve_format
    return torch.channels_last


class Pipeline:
    """Diffusion process, network and data shape of one experiment on one device."""

    def __init__(self, exp: Experiment, device: torch.device) -> None:
        self.exp = exp
        self.device = device
        self.shape = tuple(exp.dataset.shape)
        self.diffusion = Diffusion(exp.scheduler.betas(), exp.diffusion.prediction, exp.diffusion.variance)
        out_channels = exp.loss.out_channels(self.shape[0], exp.diffusion.variance)
        self.model = exp.backbone.build(self.shape, out_channels).to(
            device, memory_format=memory_format(self.shape, device, exp.train.precision)
        )
        # The loss's own copy, told the data's levels (its decoder term needs them).
        self.loss = exp.loss.for_data(exp.dataset.levels)

    @property
    def levels(self) -> int | None:
        return self.exp.dataset.levels

    def load_data(self) -> tuple[Any, torch.Tensor]:
        """(training data, held-out data on the device).

        A seeded permutation keeps `eval.holdout` of the set out of training
        (with holdout 0, evaluation sees the training data). An in-memory set
        comes back as two tensors on the device. A large set (a torch Dataset)
        streams: training gets a Subset of it, and the first `eval.samples` of
        its held-out examples are read into memory for evaluation.
        """
        data = self.exp.dataset.load()
        n_holdout = int(round(len(data) * self.exp.eval.holdout))
        if n_holdout == 0:
            train, held_out = data, data
        else:
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.exp.seed))
            train, held_out = select(data, order[n_holdout:]), select(data, order[:n_holdout])
        if isinstance(data, torch.Tensor):
            return train.to(self.device), held_out.to(self.device)
        return train, first_examples(held_out, self.exp.eval.samples).to(self.device)

    @staticmethod
    def draw(
        sampler: Sampler,
        model: Callable,
        diffusion: Diffusion,
        shape: tuple[int, ...],
        generator: torch.Generator,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        return_trajectory: bool = False,
    ) -> Any:
        """Samples of `shape` in batches of at most `batch_size` (the trajectory of the first batch only)."""
        n = shape[0]
        batch_size = batch_size or n
        outputs, trajectory = [], None
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            result = sampler.sample(
                model, diffusion, (size, *shape[1:]), generator=generator, progress=progress,
                return_trajectory=return_trajectory and start == 0,
            )
            if isinstance(result, tuple):
                result, trajectory = result
            outputs.append(result)
        samples = torch.cat(outputs)
        return (samples, trajectory) if return_trajectory else samples


def build_sampler(exp: Experiment, name: str | None = None, options: dict[str, Any] | None = None) -> Sampler:
    """The experiment's sampler with `options` changed, or another registered sampler."""
    from workbench.registry import default_registry, validate_component

    options = options or {}
    if name is None or name == exp.sampler.name:
        entry = default_registry().get("sampler", f"{exp.providers['sampler'].plugin}:{exp.sampler.name}")
        return validate_component(entry, {**exp.sampler.model_dump(), **options})
    return default_registry().build("sampler", name, **options)


def select(data: Any, index: torch.Tensor) -> Any:
    """The examples at `index` of a tensor (a tensor), or of a torch Dataset (a Subset, read lazily)."""
    if isinstance(data, torch.Tensor):
        return data[index]
    return torch.utils.data.Subset(data, index.tolist())


def first_examples(data: Any, n: int) -> torch.Tensor:
    """The first n examples of a tensor or a torch Dataset, as one tensor."""
    if isinstance(data, torch.Tensor):
        return data[:n]
    return torch.stack([example_tensor(data[i]) for i in range(max(1, min(len(data), n)))])


def example_tensor(item: Any) -> torch.Tensor:
    """A dataset item's data tensor (datasets may return (data, label) pairs)."""
    return item[0] if isinstance(item, (tuple, list)) else item
