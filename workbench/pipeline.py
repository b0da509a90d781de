"""An experiment's components assembled into things that run: data, diffusion, model, sampler.

Training, evaluation and a finished run's handle all build from here, so a
checkpoint always meets the same network it was trained with.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from workbench import plots, streams
from workbench.batches import first_examples, select
from workbench.components import Sampler
from workbench.diffusion import Diffusion, check_betas
from workbench.errors import ConfigError, WorkbenchError
from workbench.experiment import Experiment
from workbench.registry import validate_component


def resolve_device(requested: str | None) -> torch.device:
    """'auto' -> CUDA when available, else CPU; asking for CUDA without it is an error."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"device '{requested}' was asked for, but CUDA is not available here", hint="use --device cpu")
    return device


def memory_format(
    shape: tuple[int, ...], device: torch.device, precision: str = "fp32", layout: str | None = None
) -> torch.memory_format:
    """How the 4-D weights of a network for examples of `shape` are laid out.

    `layout` ("channels_last" or "contiguous") is what training measured or
    was told (workbench.machine). Without it, images get channels_last
    (NHWC), which oneDNN and cuDNN run natively, except under bf16 autocast
    on the CPU. Only 4-D parameters change; a network without convolutions
    is left as it is, and so is the math.
    """
    if len(shape) != 3:
        return torch.preserve_format
    if layout is None:
        layout = "contiguous" if device.type == "cpu" and precision == "bf16" else "channels_last"
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def schedule(exp: Experiment) -> torch.Tensor:
    """The experiment's betas, checked where a plugin's output enters the engine (diffusion.check_betas);
    a scheduler that raises is named with the plugin that provided it."""
    scheduler, provider = exp.scheduler, exp.providers["scheduler"]
    try:
        betas = scheduler.betas()
    except Exception as exc:  # a third party's scheduler: name it rather than show its traceback
        raise WorkbenchError(
            f"scheduler '{scheduler.name}' from plugin '{provider}' raised {type(exc).__name__} in betas(): {exc}",
            hint=f"the plugin '{provider.plugin}' needs a fix; `wb list schedulers` shows the others",
        ) from None
    return check_betas(betas, scheduler.name, provider, scheduler.timesteps)


class Pipeline:
    """Diffusion process, network and data shape of one experiment on one device."""

    def __init__(self, exp: Experiment, device: torch.device) -> None:
        self.exp = exp
        self.device = device
        self.shape = tuple(exp.dataset.shape)
        self.diffusion = Diffusion(schedule(exp), exp.diffusion.prediction, exp.diffusion.variance)
        out_channels = exp.loss.out_channels(self.shape[0], exp.diffusion.variance)
        self.num_classes = exp.num_classes
        """K for a conditional experiment (labels 0..K-1, K = "no label"); None for an unconditional one."""
        self.train_labels: torch.Tensor | None = None
        self.held_out_labels: torch.Tensor | None = None
        """Class indices of the training and held-out examples: set by load_data() for a conditional experiment."""
        self.model = build_backbone(exp, self.shape, out_channels).to(
            device, memory_format=memory_format(self.shape, device, exp.train.precision)
        )
        # The loss's own copy, told the data's levels (its decoder term needs them).
        self.loss = exp.loss.for_data(exp.dataset.levels)

    @property
    def levels(self) -> int | None:
        return self.exp.dataset.levels

    def lay_out(self, layout: str | None) -> None:
        """Lay the network's 4-D weights out as `layout` ("channels_last" or "contiguous": what training measured or
        was told); None keeps the default. The values, and so the math, do not change."""
        if layout is not None:
            self.model.to(memory_format=memory_format(self.shape, self.device, self.exp.train.precision, layout))

    def load_data(self) -> tuple[Any, torch.Tensor]:
        """(training data, held-out data on the device).

        A seeded permutation keeps `eval.holdout` of the set out of training
        (with holdout 0, evaluation sees the training data). An in-memory set
        comes back as two tensors on the device. A large set (a torch Dataset)
        streams: training gets a Subset of it, and the first `eval.samples` of
        its held-out examples are read into memory for evaluation.
        """
        data = self.exp.dataset.load()
        labels = self._class_labels(data) if self.exp.conditional else None
        n_holdout = int(round(len(data) * self.exp.eval.holdout))
        if n_holdout == 0:
            train, held_out = data, data
            if labels is not None:
                self.train_labels = self.held_out_labels = labels.to(self.device)
        else:
            order = torch.randperm(len(data), generator=streams.generator(self.exp.seed, "holdout"))
            train, held_out = select(data, order[n_holdout:]), select(data, order[:n_holdout])
            if labels is not None:
                self.train_labels = labels[order[n_holdout:]].to(self.device)
                self.held_out_labels = labels[order[:n_holdout]].to(self.device)
        if isinstance(data, torch.Tensor):
            return train.to(self.device), held_out.to(self.device)
        return train, first_examples(held_out, self.exp.eval.samples).to(self.device)

    def _class_labels(self, data: Any) -> torch.Tensor:
        """The dataset's class indices, checked against its examples and its class count."""
        dataset = self.exp.dataset
        if not isinstance(data, torch.Tensor):
            raise WorkbenchError(
                f"experiment '{self.exp.name}' is conditional, but dataset '{dataset.name}' streams from disk, "
                "and conditional training reads labels of in-memory sets only",
                hint="raise the dataset's in_memory_limit, or remove `condition`",
            )
        labels = dataset.class_labels()
        if labels is None or len(labels) != len(data):
            raise WorkbenchError(
                f"dataset '{dataset.name}' declares {dataset.num_classes} classes but gives "
                f"{'no' if labels is None else len(labels)} labels for its {len(data)} examples"
            )
        labels = labels.long()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise WorkbenchError(f"dataset '{dataset.name}': a class label lies outside 0..{self.num_classes - 1}")
        return labels

    def sampler(self, name: str | None = None, options: dict[str, Any] | None = None) -> Sampler:
        """The experiment's sampler with `options` changed, or another registered sampler with its options."""
        exp = self.exp
        options = options or {}
        if name is None or name == exp.sampler.name:
            entry = exp.registry.get("sampler", f"{exp.providers['sampler'].plugin}:{exp.sampler.name}")
            return validate_component(entry, {**exp.sampler.model_dump(), **options})
        # The guidance scale is the run's, not one sampler's: another sampler keeps it unless told otherwise.
        return exp.registry.build("sampler", name, **{"guidance": exp.sampler.guidance, **options})




def build_backbone(exp: Experiment, shape: tuple[int, ...], out_channels: int) -> torch.nn.Module:
    """The experiment's network; a conditional experiment's gets `num_classes`, which its backbone must accept."""
    if not exp.conditional:
        return exp.backbone.build(shape, out_channels)
    backbone = exp.backbone
    if "num_classes" not in inspect.signature(backbone.build).parameters:
        provider = exp.providers["backbone"]
        raise ConfigError(
            f"experiment '{exp.name}' is conditional (condition.labels = true), but backbone '{backbone.name}' "
            f"(from {provider.plugin}) cannot take class labels: its build() has no `num_classes` argument",
            hint="use a backbone that takes labels (mlp, unet), or remove `condition`",
        )
    return backbone.build(shape, out_channels, num_classes=exp.num_classes)


def noised_examples(exp: Experiment, steps: int, n: int) -> tuple[list[int], list[tuple[str, torch.Tensor]]]:
    """What `wb noise` shows, without training: `n` examples (2000 points of a 2-D set) at `steps` evenly spaced t.

    Returns the steps and a (title, x_t) picture per step.
    """
    diffusion = Diffusion(schedule(exp))
    x0 = first_examples(exp.dataset.load(), n if len(exp.dataset.shape) == 3 else 2000)
    shown = plots.evenly_spaced_steps(diffusion.num_timesteps, steps)
    return shown, plots.forward_process(diffusion, x0, shown, streams.generator(exp.seed, "forward"))
