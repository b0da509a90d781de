"""The component protocol: one small pydantic class per component.

A component's fields are its options; its class-level `name` is what an
experiment names it by; its docstring's first line is its summary. The
experiment table `scheduler = { name = "cosine", timesteps = 500 }` is
validated by the `cosine` class, so an unknown option or a wrong type is an
error that names both.

This module must stay importable without torch: `wb list` reads these
classes, and importing torch takes seconds.
"""

from __future__ import annotations

import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

if TYPE_CHECKING:
    import torch

    from workbench.diffusion import Diffusion

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called by samplers after each model evaluation."""

Spacing = Literal["linspace", "leading", "trailing", "logsnr"]
"""The step grids a shortened chain can walk (workbench.sampling.timestep_grid describes them)."""
SPACINGS: tuple[str, ...] = get_args(Spacing)


class Component(BaseModel):
    """Base of every component: options are pydantic fields, unknown ones are errors."""

    # defer_build: validators are built on first use, so that `wb list` does not build one per component.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), defer_build=True)

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring."""
        doc = cls.__doc__ or ""
        return doc.strip().splitlines()[0].strip() if doc.strip() else ""

    @classmethod
    def options(cls) -> list[Option]:
        """Each option with its type, default and description (for `wb list -v`)."""
        return [
            Option(
                name=field_name,
                type=describe_type(field.annotation, field.metadata),
                default=None if field.is_required() else _default_of(field),
                required=field.is_required(),
                description=field.description or "",
            )
            for field_name, field in cls.model_fields.items()
        ]


@dataclass(frozen=True)
class Option:
    name: str
    type: str
    default: Any
    required: bool
    description: str


# --- the six kinds ------------------------------------------------------------


class Dataset(Component):
    """Training data in [-1, 1], with its shape and number of discrete levels."""

    kind: ClassVar[str] = "dataset"

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. (2,) for 2-D points or (1, 8, 8) for digits."""
        raise NotImplementedError

    @property
    def levels(self) -> int | None:
        """Discrete values per dimension (256 for 8-bit images); None for continuous data."""
        return None

    def load(self) -> torch.Tensor | torch.utils.data.Dataset:
        """The whole set as one float tensor [N, *shape], or a torch Dataset for large sets."""
        raise NotImplementedError

    def labels(self) -> torch.Tensor | None:
        """Class labels [N] where the set has them (used by feature-space metrics)."""
        return None

    @property
    def class_names(self) -> list[str] | None:
        """The names of the classes a conditional experiment can ask for, in index order; None: no classes.

        Known without loading the data where possible (the count sizes the backbone's label embedding).
        """
        return None

    @property
    def num_classes(self) -> int | None:
        """How many classes (`len(class_names)`); None for a set without classes."""
        names = self.class_names
        return None if names is None else len(names)

    def class_labels(self) -> torch.Tensor | None:
        """Each example's class index [N] in 0..num_classes-1 (what conditional training sees); default `labels()`."""
        return self.labels() if self.class_names is not None else None


class Scheduler(Component):
    """A noise (variance) schedule: betas for T steps."""

    kind: ClassVar[str] = "scheduler"

    timesteps: int = Field(1000, ge=1, description="number of diffusion steps T")

    def betas(self) -> torch.Tensor:
        """float64 tensor [T] of betas, each in (0, 1)."""
        raise NotImplementedError


class Backbone(Component):
    """A network `model(x_t, t) -> output` (`model(x_t, t, y)` when built with `num_classes`)."""

    kind: ClassVar[str] = "backbone"

    def build(self, data_shape: tuple[int, ...], out_channels: int) -> torch.nn.Module:
        """A module mapping (x_t [B, *data_shape], t [B] long) to [B, out_channels, ...].

        A backbone that can take class labels accepts a keyword `num_classes=K`
        as well; its module then maps (x_t, t, y) with y [B] long in 0..K, where
        the index K means "no label" (classifier-free guidance's null label).
        """
        raise NotImplementedError

    def parameter_count(self, data_shape: tuple[int, ...], out_channels: int, **options: Any) -> int:
        """Number of parameters of `build(data_shape, out_channels)`.

        Built on the meta device: no memory is allocated and nothing is initialised,
        so even a large network is counted in milliseconds.
        """
        import torch

        with torch.device("meta"):
            module = self.build(tuple(data_shape), out_channels, **options)
        return sum(p.numel() for p in module.parameters())


@dataclass
class LossTerms:
    """What a loss returns to the trainer for one batch.

    `loss` [B] is what training minimises. `bound` [B], where the loss has one,
    is each example's term L_t of the variational bound at its step t, in
    bits/dim: what importance sampling of t (workbench.timesteps) learns from.
    """

    loss: torch.Tensor
    bound: torch.Tensor | None = None


class Loss(Component):
    """A training objective: per-example loss for a batch of clean data at given steps and noise."""

    kind: ClassVar[str] = "loss"

    @property
    def timestep_sampling(self) -> Literal["uniform", "importance"]:
        """How the trainer draws t for this loss: uniformly, or by importance from the bound's history."""
        return "uniform"

    def terms(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> LossTerms:
        """The loss of each example x0 noised to step t with `noise`.

        `weights` [B] (in x0's dtype) are 1 / (T p(t)) when t was not drawn
        uniformly: they multiply the part of the loss that depends on t, which
        keeps its expectation that of uniform t (Nichol & Dhariwal 2021, sec. 3.3).
        None means uniform t.
        """
        raise NotImplementedError

    def __call__(
        self,
        model: Callable,
        diffusion: Diffusion,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-example loss [B]; t (uniform over the T steps) then noise are drawn with `generator` unless given."""
        import torch

        if t is None:
            t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return self.terms(model, diffusion, x0, t, noise).loss

    def for_data(self, levels: int | None) -> Loss:
        """This loss for data with `levels` discrete values per dimension (losses without a decoder ignore it)."""
        return self

    def out_channels(self, data_channels: int, variance: str = "fixed_small") -> int:
        """How many channels the backbone must output (learned variance doubles them)."""
        return 2 * data_channels if variance == "learned_range" else data_channels

    def check(self, prediction: str, variance: str) -> None:
        """Raise ConfigError when this loss cannot train that parameterization."""


class Sampler(Component):
    """Turns noise into data with a trained model."""

    kind: ClassVar[str] = "sampler"

    guidance: float = Field(
        1.0,
        ge=0,
        description="classifier-free guidance scale s of a conditional run: out_u + s (out_c - out_u); "
        "1: the conditional model, 0: the unconditional one (diffusers' guidance_scale)",
    )

    def sample(
        self,
        model: Callable,
        diffusion: Diffusion,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        return_trajectory: bool = False,
        device: torch.device | str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Samples x0 of `shape`; with `return_trajectory`, also the list of x_t visited.

        The device defaults to the generator's, else the model's parameters', else the CPU.
        """
        raise NotImplementedError


@dataclass
class MetricResult:
    """A metric's value and what it leaves beside it in the run directory.

    `artifacts` maps a file name to its content: a PIL image (or anything
    with `.save(file, format=...)`) for a `.png`, JSON-able data for a `.json`.
    The nll metric leaves its bound's breakdown by step this way.
    """

    value: float
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """What a metric is given: the trained model, the process, held-out data, and samples drawn once.

    `samples` are drawn by `draw()` the first time a metric asks for them and
    shared by every metric after it; pass `samples` to score a given set.
    Each metric draws its own randomness from `generator(stream)`, a
    generator seeded by the run's seed and the stream's name, so one metric's
    draws do not depend on which metrics ran before it.
    """

    model: Callable
    diffusion: Diffusion
    data: torch.Tensor
    levels: int | None
    sampler: Sampler
    num_samples: int
    draw: Callable[[], torch.Tensor] | None = None
    samples_given: torch.Tensor | None = None
    seed: int = 0
    dataset: Dataset | None = None
    cache_dir: Path | None = None
    announce: Callable[[str], None] | None = None
    progress: Callable[[int, int], None] | None = None
    """`progress(done, total)` within the current phase (model evaluations, timesteps x batches), for the bar."""
    memo: dict[str, Any] = field(default_factory=dict)
    samples_read: int = 0
    """What metrics share, computed by the first that needs it (e.g. precision and recall's neighbourhoods)."""
    labels: torch.Tensor | None = None
    """A conditional run's: the class each sample was asked for [num_samples] (every class equally often)."""
    data_labels: torch.Tensor | None = None
    """A conditional run's: the class of each held-out example [len(data)]."""
    class_names: list[str] | None = None
    """A conditional run's class names; None for an unconditional run."""

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def samples(self) -> torch.Tensor:
        self.samples_read += 1  # which metrics depend on the sampler (an evaluation is keyed by it)
        if self.samples_given is None:
            if self.draw is None:
                raise ValueError("this evaluation has neither samples nor a way to draw them")
            self.samples_given = self.draw()
        return self.samples_given

    def generator(self, stream: str) -> torch.Generator:
        """A fresh generator of the named random stream (workbench.streams) on the evaluation's device."""
        from workbench.streams import generator

        return generator(self.seed, stream, self.device)


class Metric(Component):
    """An evaluation of a trained model."""

    kind: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = False

    def compute(self, evaluation: Evaluation) -> float | MetricResult:
        """The metric's value, or a MetricResult with the value and its pictures and tables."""
        raise NotImplementedError


KINDS: dict[str, type[Component]] = {
    base.kind: base for base in (Dataset, Scheduler, Backbone, Loss, Sampler, Metric)
}


def normalize_kind(kind: str) -> str:
    """'schedulers' or 'Scheduler' -> 'scheduler'; raises ValueError when unknown."""
    k = kind.strip().lower()
    if k in KINDS:
        return k
    if k.endswith("es") and k[:-2] in KINDS:
        return k[:-2]
    if k.endswith("s") and k[:-1] in KINDS:
        return k[:-1]
    raise ValueError(kind)


# --- describing option types for humans -------------------------------------


def _default_of(field: Any) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()
    return None


def describe_type(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A short human form of a field type: 'int >= 1', "'eps' | 'x0'", 'list[int]'."""
    text = _type_name(annotation)
    for constraint in metadata or []:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(constraint, attr, None)
            if value is not None:
                text += f" {op} {value}"
    return text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(repr(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation))
