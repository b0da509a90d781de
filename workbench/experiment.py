"""The experiment schema and its resolution.

An experiment names one component per slot (dataset, scheduler, backbone,
loss, sampler), the parameterization (`diffusion`), and training and
evaluation settings. Resolving it means: merge its `extends` chain, apply
`--set` overrides, look every component up in the registry, validate every
table, and fill in every default. The resolved experiment is what `wb show`
prints and what a run directory stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workbench.components import Backbone, Component, Dataset, Loss, Metric, Sampler, Scheduler
from workbench.errors import ConfigError, describe_validation_error, did_you_mean
from workbench.experiment_file import ExperimentFile, deep_merge, find_experiments_file, parse_override, resolve_extends
from workbench.registry import Entry, Provider, Registry, default_registry, validate_component

# slot -> component kind; the default component where an experiment names none.
SLOTS = {"dataset": "dataset", "scheduler": "scheduler", "backbone": "backbone", "loss": "loss", "sampler": "sampler"}
DEFAULTS = {"scheduler": "linear", "loss": "mse", "sampler": "ddpm"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiffusionSpec(_Section):
    """What the network predicts and which reverse-process variance it uses."""

    prediction: Literal["eps", "x0", "v"] = Field("eps", description="the network predicts the noise, the clean data, or v")
    variance: Literal["fixed_small", "fixed_large", "learned_range"] = Field(
        "fixed_small", description="posterior variance, beta_t, or learned between them (improved DDPM)"
    )


class TrainSpec(_Section):
    """Optimisation settings."""

    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(128, ge=1, description="global batch size (split across processes)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup: int = Field(0, ge=0, description="steps of linear learning-rate warm-up")
    grad_clip: float | None = Field(1.0, gt=0, description="clip the gradient norm to this (None: no clipping)")
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the weights used for sampling and evaluation")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step (gradient accumulation)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast (CUDA, or a CPU with AVX512-BF16 / AMX) or fp32")
    compile: bool = Field(False, description="torch.compile the backbone")
    threads: int | Literal["auto"] = Field(
        "auto", description="CPU threads of torch ('auto': the faster of 1 and the available cores, measured; WB_THREADS overrides)"
    )
    layout: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="memory layout of an image network's weights ('auto': the faster, measured on this machine)"
    )
    log_every: int = Field(50, ge=1, description="steps between metric-log lines")
    sample_every: int = Field(0, ge=0, description="steps between preview sample grids (0: only at the end)")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    preview: int = Field(64, ge=1, description="samples in a preview grid")


class EvalSpec(_Section):
    """Evaluation after training."""

    samples: int = Field(1000, ge=1, description="samples drawn for sample-quality metrics")
    batch_size: int = Field(1000, ge=1, description="samples per sampler call")
    holdout: float = Field(0.1, ge=0, lt=1, description="fraction of the data kept out of training for evaluation")
    metrics: list[str | dict[str, Any]] = Field(default_factory=list, description="metric names or tables")


class ConditionSpec(_Section):
    """Class-conditional training: the backbone gets the dataset's labels, each dropped to "no label" with p = dropout."""

    labels: bool = Field(False, description="train on the dataset's class labels (model(x_t, t, y))")
    dropout: float = Field(
        0.0, ge=0, lt=1,
        description="probability that a training label is replaced by 'no label' (> 0 trains the unconditional "
        "model that classifier-free guidance needs; 0.1 is usual)",
    )


SECTIONS: dict[str, type[_Section]] = {
    "diffusion": DiffusionSpec, "train": TrainSpec, "eval": EvalSpec, "condition": ConditionSpec,
}
TOP_LEVEL = ["description", "seed", "extends", *SLOTS, *SECTIONS]


@dataclass(frozen=True)
class Experiment:
    """A fully resolved experiment: validated components with their providers, and settings."""

    name: str
    description: str
    seed: int
    dataset: Dataset
    scheduler: Scheduler
    backbone: Backbone
    loss: Loss
    sampler: Sampler
    diffusion: DiffusionSpec
    train: TrainSpec
    eval: EvalSpec
    metrics: tuple[Metric, ...]
    providers: dict[str, Provider]
    source: Path | None = None
    condition: ConditionSpec = field(default_factory=ConditionSpec)
    """Class-conditional training (the `condition` table); unconditional by default."""
    registry: Registry = field(default_factory=default_registry, repr=False, compare=False)
    """The registry it was resolved with: the pipeline builds samplers and the trainer calls run hooks from it."""

    def component(self, slot: str) -> Component:
        return getattr(self, slot)

    @property
    def conditional(self) -> bool:
        """Whether the model is trained on class labels (`condition.labels`)."""
        return self.condition.labels

    @property
    def num_classes(self) -> int | None:
        """The dataset's class count for a conditional experiment; None for an unconditional one."""
        return self.dataset.num_classes if self.conditional else None

    def to_dict(self) -> dict[str, Any]:
        """The resolved experiment as plain data: every option, every provider."""
        table: dict[str, Any] = {"description": self.description, "seed": self.seed}
        for slot in SLOTS:
            table[slot] = _component_table(self.component(slot), self.providers[slot])
        table["diffusion"] = self.diffusion.model_dump(mode="json")
        table["train"] = self.train.model_dump(mode="json")
        if self.conditional:  # unconditional experiments resolve as they did before conditioning existed
            table["condition"] = self.condition.model_dump(mode="json")
        table["eval"] = {
            **self.eval.model_dump(mode="json", exclude={"metrics"}),
            "metrics": [
                _component_table(m, self.providers[f"metric:{i}"]) for i, m in enumerate(self.metrics)
            ],
        }
        return table

    def to_toml(self) -> str:
        from workbench.toml_io import dumps

        return dumps({self.name: self.to_dict()})


def _component_table(component: Component, provider: Provider) -> dict[str, Any]:
    return {"name": component.name, "provider": provider.plugin, **component.model_dump(mode="json")}


# --- resolution ---------------------------------------------------------------------


def load_experiment(
    name: str,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    registry: Registry | None = None,
) -> Experiment:
    """Read, merge, override and validate experiment `name` (see the module docstring).

    `file` defaults to the settings' experiments file (WB_EXPERIMENTS, else
    ./experiments.toml); `registry` to the installed plugins'.
    """
    registry = registry or default_registry()
    if file is None:
        from workbench.settings import load_settings

        path = find_experiments_file(None, load_settings().experiments)
    else:
        path = find_experiments_file(Path(file), Path(file))
    exp_file = ExperimentFile.read(path)
    fields_of = _fields_of(registry)
    raw, chain = resolve_extends(exp_file, name, fields_of, SLOTS)
    for text in overrides:
        raw = deep_merge(raw, parse_override(text, [k for k in TOP_LEVEL if k != "extends"]), fields_of, SLOTS)
    return resolve(name, raw, registry, _Locator(chain), source=path)


def resolve(name: str, raw: dict[str, Any], registry: Registry, where: _Locator | None = None, source: Path | None = None) -> Experiment:
    """Validate a raw experiment table into an Experiment."""
    where = where or _Locator([])
    for key in raw:
        if key not in TOP_LEVEL:
            raise ConfigError(
                f"{where(name, [key])}: experiment '{name}': unknown key '{key}'{did_you_mean(key, TOP_LEVEL)}",
                hint=f"an experiment has: {', '.join(TOP_LEVEL)}",
            )
    components: dict[str, Component] = {}
    providers: dict[str, Provider] = {}
    for slot, kind in SLOTS.items():
        table = raw.get(slot, DEFAULTS.get(slot))
        if table is None:
            raise ConfigError(
                f"{where(name, [])}: experiment '{name}' has no {slot}",
                hint=f'add e.g. {slot} = {{ name = "..." }}; `wb list {kind}s` shows the choices',
            )
        entry, component = _build(registry, kind, table, f"{where(name, [slot])}: experiment '{name}', ")
        components[slot], providers[slot] = component, entry.provider

    sections = {}
    for key, model in SECTIONS.items():
        sections[key] = _validate_section(model, raw.get(key, {}), name, key, where)
    metrics = []
    for i, table in enumerate(sections["eval"].metrics):
        entry, metric = _build(registry, "metric", table, f"{where(name, ['eval', 'metrics'])}: experiment '{name}', ")
        metrics.append(metric)
        providers[f"metric:{i}"] = entry.provider

    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"{where(name, ['seed'])}: experiment '{name}': seed must be a non-negative integer, got {seed!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where(name, ['description'])}: experiment '{name}': description must be a string")

    diffusion = sections["diffusion"]
    _check_condition(name, sections["condition"], components, where)
    try:
        components["loss"].check(diffusion.prediction, diffusion.variance)
    except ConfigError as exc:
        raise ConfigError(f"{where(name, ['loss'])}: experiment '{name}': {exc.message}", exc.hint) from None
    return Experiment(
        name=name,
        description=description,
        seed=seed,
        diffusion=diffusion,
        train=sections["train"],
        eval=sections["eval"],
        condition=sections["condition"],
        metrics=tuple(metrics),
        providers=providers,
        source=source,
        registry=registry,
        **components,
    )


def _check_condition(name: str, condition: ConditionSpec, components: dict[str, Component], where: _Locator) -> None:
    """A conditional experiment needs a dataset with classes; guidance other than 1 needs both of those
    and an unconditional model (label dropout > 0)."""
    guidance = components["sampler"].guidance
    if condition.labels:
        dataset = components["dataset"]
        if not dataset.num_classes:
            raise ConfigError(
                f"{where(name, ['condition'])}: experiment '{name}': condition.labels = true, "
                f"but dataset '{dataset.name}' has no class labels",
                hint="condition on a dataset with classes (digits, shapes, eight_gaussians, moons, circles), "
                "or remove `condition`",
            )
        if guidance != 1.0 and condition.dropout == 0:
            raise ConfigError(
                f"{where(name, ['sampler'])}: experiment '{name}': sampler guidance = {guidance:g} needs an "
                "unconditional model, but condition.dropout = 0 never trains one",
                hint="train with e.g. condition = { labels = true, dropout = 0.1 }, or use guidance = 1",
            )
    elif guidance != 1.0:
        raise ConfigError(
            f"{where(name, ['sampler'])}: experiment '{name}': sampler guidance = {guidance:g} applies only to "
            "conditional experiments, and this one has no `condition`",
            hint="add condition = { labels = true, dropout = 0.1 }, or remove `guidance`",
        )


def _build(registry: Registry, kind: str, table: Any, prefix: str) -> tuple[Entry, Component]:
    if isinstance(table, str):
        table = {"name": table}
    if not isinstance(table, dict) or "name" not in table:
        raise ConfigError(f'{prefix}{kind}: expected a table with a name, like {{ name = "..." }}, got {table!r}')
    options = dict(table)
    name = str(options.pop("name"))
    provider = options.pop("provider", None)
    try:
        entry = registry.get(kind, f"{provider}:{name}" if provider and ":" not in name else name)
    except ConfigError as exc:
        raise ConfigError(prefix + exc.message, exc.hint) from None
    return entry, validate_component(entry, options, prefix)


def _validate_section(model: type[_Section], table: Any, name: str, key: str, where: _Locator) -> _Section:
    if not isinstance(table, dict):
        raise ConfigError(f"{where(name, [key])}: experiment '{name}': `{key}` must be a table, got {table!r}")
    try:
        return model(**table)
    except ValidationError as exc:
        def located(option: str) -> str:
            return f"{where(name, [key, option.split('.')[0]] if option else [key])}: experiment '{name}'"

        raise ConfigError(describe_validation_error(exc, model.model_fields, located, qualify=f"{key}.")) from None


class _Locator:
    """Finds 'file:line' for a key, searching the experiment and then what it extends."""

    def __init__(self, chain: list[tuple[ExperimentFile, str]]) -> None:
        self.chain = chain

    def __call__(self, name: str, keys: list[str]) -> str:
        for file, exp_name in self.chain:
            line = file.locate(exp_name, keys)
            if line and (keys == [] or line != file.locate(exp_name, [])):
                return f"{file.path}:{line}"
        if self.chain:
            file, exp_name = self.chain[0]
            return file.where(exp_name)
        return f"experiment '{name}'"


def _fields_of(registry: Registry):
    def fields_of(kind: str, name: str) -> set[str]:
        try:
            return set(registry.get(kind, str(name)).cls.model_fields)
        except ConfigError:
            return set()  # an unknown name: resolve() reports it with the close matches

    return fields_of
