"""Classifier-free guidance (Ho & Salimans 2022), in one place: a model that samplers call like any model.

A conditional network is `net(x_t, t, y)` with y [B] long in 0..K-1 and one
more index, K, meaning "no label" (trained by label dropout). `Guided` binds
the labels and the scale s and is itself `model(x_t, t)`, so every sampler,
a third party's included, samples class y with guidance without a line of
code of its own:

    out = out_u + s * (out_c - out_u)

with out_c = net(x, t, y) and out_u = net(x, t, K): diffusers' `guidance_scale`
convention (s = 1 is the conditional model, s = 0 the unconditional one; Ho &
Salimans' w is s - 1). It is applied to whatever the network predicts (eps, x0
or v; all are affine in one another at fixed x_t and t, so guiding one guides
the others alike). With a learned variance only the mean channels (the first
half) are guided; the variance channels come from the conditional pass.

The two passes run as one forward of a doubled batch. At s = 1 and s = 0 only
the one pass needed runs, so those samples are bitwise the conditional and the
unconditional model's own.
"""

from __future__ import annotations

from typing import Callable

import torch


class Guided(torch.nn.Module):
    """`model(x_t, t)` that samples the classes `labels` of a conditional `net` at guidance scale `guidance`.

    `null_label` is the net's "no label" index (its class count K). `learned_variance`:
    the output's channel axis is [mean, variance values], and only the mean is guided.
    A Module, so that samplers find the net's parameters (device, dtype) through it.
    """

    def __init__(
        self,
        net: Callable,
        labels: torch.Tensor,
        guidance: float,
        null_label: int,
        learned_variance: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.labels = labels
        self.guidance = float(guidance)
        self.null_label = null_label
        self.learned_variance = learned_variance

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = self.labels.to(x.device)
        if len(y) != len(x):
            raise ValueError(f"guided model: {len(y)} labels for a batch of {len(x)}")
        s = self.guidance
        if s == 1.0:
            return self.net(x, t, y)
        null = torch.full_like(y, self.null_label)
        if s == 0.0:
            return self.net(x, t, null)
        both_t = t if t.numel() == 1 else torch.cat([t, t])
        out_c, out_u = self.net(torch.cat([x, x]), both_t, torch.cat([y, null])).chunk(2)
        if not self.learned_variance:
            return out_u + s * (out_c - out_u)
        mean_c, var_c = out_c.chunk(2, dim=1)
        mean_u, _ = out_u.chunk(2, dim=1)
        return torch.cat([mean_u + s * (mean_c - mean_u), var_c], dim=1)


class WithLabels:
    """`model(x_t, t)` that is `net(x_t, t, y)` with the labels y fixed: what a loss calls in conditional training."""

    def __init__(self, net: Callable, labels: torch.Tensor) -> None:
        self.net = net
        self.labels = labels

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, self.labels)


def drop_labels(labels: torch.Tensor, drop: torch.Tensor, null_label: int) -> torch.Tensor:
    """The labels with those where `drop` is true replaced by `null_label` ("no label")."""
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def balanced_labels(n: int, num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: n labels asking for every class equally often (the first n mod K once more)."""
    return torch.arange(n, device=device) % num_classes


def class_index(value: int | str, class_names: list[str] | None, what: str = "experiment") -> int:
    """A class asked for by index (7, "7") or by name ("square") -> its index; ConfigError naming the choices."""
    from workbench.errors import ConfigError

    if not class_names:
        raise ConfigError(
            f"{what} is not conditional: it was trained without class labels, so no class can be asked for",
            hint="train with condition = { labels = true, dropout = 0.1 } to sample classes",
        )
    choices = ", ".join(f"{i} {name!r}" if name != str(i) else str(i) for i, name in enumerate(class_names))
    if isinstance(value, str) and value in class_names:
        return class_names.index(value)
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{what} has no class {value!r}", hint=f"its {len(class_names)} classes are: {choices}"
        ) from None
    if not 0 <= index < len(class_names):
        raise ConfigError(
            f"class {index} is out of range: {what} has {len(class_names)} classes (0..{len(class_names) - 1})",
            hint=f"its classes are: {choices}",
        )
    return index


def parse_scales(text: str | None) -> list[float | None]:
    """'0,1,2,4' -> [0.0, 1.0, 2.0, 4.0]; None -> [None] (the sampler's own scale); ConfigError when not numbers >= 0."""
    from workbench.errors import ConfigError

    if text is None:
        return [None]
    try:
        scales = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--guidance {text!r}: expected numbers separated by commas", hint="e.g. --guidance 0,1,2,4") from None
    bad = [s for s in scales if not s >= 0 or s == float("inf")]
    if bad:
        raise ConfigError(f"--guidance {text!r}: a guidance scale is a finite number >= 0, not {bad[0]:g}")
    return scales


def check_guidance(guidance: float | None, conditional: bool, dropout: float, what: str = "experiment") -> None:
    """ConfigError for a guidance scale the run cannot apply: any but 1 needs an unconditional model."""
    from workbench.errors import ConfigError

    if guidance is None or guidance == 1.0:
        return
    if guidance < 0 or guidance != guidance:
        raise ConfigError(f"guidance must be a number >= 0, not {guidance}")
    if not conditional:
        raise ConfigError(
            f"guidance {guidance:g} applies to conditional runs only, and {what} was trained without labels",
            hint="train with condition = { labels = true, dropout = 0.1 }",
        )
    if dropout == 0:
        raise ConfigError(
            f"guidance {guidance:g} needs the unconditional model, but {what} was trained with condition.dropout = 0, "
            "which never trains it (only guidance 1, the conditional model, is possible)",
            hint="train with condition.dropout > 0 (0.1 is usual) to use guidance",
        )
