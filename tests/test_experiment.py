"""Experiment files: extends, --set overrides, defaults, providers, located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.experiment import load_experiment
from workbench.experiment_file import ExperimentFile

BASE = """\
[base]
description = "the base"
seed = 3
dataset   = { name = "swissroll", n = 500 }
scheduler = { name = "linear", timesteps = 100, beta_end = 0.01 }
backbone  = { name = "mlp", width = 32 }
train     = { steps = 10, batch_size = 64 }

[child]
extends = "base"
scheduler = { name = "cosine" }
train = { lr = 0.01 }

[grandchild]
extends = "child"
seed = 4
"""


def write(tmp_path: Path, text: str, name: str = "experiments.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_filled_and_providers_recorded(tmp_path, registry):
    exp = load_experiment("base", file=write(tmp_path, BASE), registry=registry)
    assert exp.seed == 3 and exp.description == "the base"
    assert exp.scheduler.name == "linear" and exp.scheduler.timesteps == 100 and exp.scheduler.beta_end == 0.01
    assert exp.loss.name == "mse" and exp.sampler.name == "ddpm"  # the defaults for unnamed slots
    assert exp.diffusion.prediction == "eps" and exp.diffusion.variance == "fixed_small"
    assert exp.train.steps == 10 and exp.train.batch_size == 64 and exp.train.lr == 1e-3
    assert exp.providers["scheduler"].plugin == "schedulers"
    table = exp.to_dict()
    assert table["scheduler"] == {
        "name": "linear", "provider": "schedulers", "timesteps": 100,
        "beta_start": 1e-4, "beta_end": 0.01, "scale_with_timesteps": True,
    }


def test_extends_deep_merges_and_a_renamed_component_keeps_only_its_options(tmp_path, registry):
    exp = load_experiment("grandchild", file=write(tmp_path, BASE), registry=registry)
    assert exp.seed == 4 and exp.description == "the base"
    assert exp.train.steps == 10 and exp.train.lr == 0.01  # merged, not replaced
    # cosine keeps the inherited timesteps but not linear's beta_end, which it does not have
    assert exp.scheduler.name == "cosine" and exp.scheduler.timesteps == 100


def test_extends_from_another_file(tmp_path, registry):
    write(tmp_path, BASE, "base.toml")
    path = write(tmp_path, '[mine]\nextends = "base.toml:child"\nbackbone = { name = "mlp", width = 16 }\n', "mine.toml")
    exp = load_experiment("mine", file=path, registry=registry)
    assert exp.backbone.width == 16 and exp.scheduler.name == "cosine"


def test_overrides_are_applied_after_extends(tmp_path, registry):
    exp = load_experiment(
        "child", file=write(tmp_path, BASE), registry=registry,
        overrides=["train.steps=200", "scheduler.name=sigmoid", "backbone.width=8", "seed=9"],
    )
    assert exp.train.steps == 200 and exp.scheduler.name == "sigmoid" and exp.scheduler.timesteps == 100
    assert exp.backbone.width == 8 and exp.seed == 9


def test_the_resolved_experiment_reloads_to_itself(tmp_path, registry):
    exp = load_experiment("grandchild", file=write(tmp_path, BASE), registry=registry, overrides=["eval.metrics=['swd']"])
    path = tmp_path / "resolved.toml"
    path.write_text(exp.to_toml())
    again = load_experiment("grandchild", file=path, registry=registry)
    assert again.to_dict() == exp.to_dict()


def test_provider_prefix_picks_a_component(tmp_path, registry):
    path = write(tmp_path, BASE.replace('name = "linear"', 'name = "schedulers:linear"'))
    assert load_experiment("base", file=path, registry=registry).scheduler.name == "linear"
    path = write(tmp_path, BASE.replace('name = "linear"', 'name = "linear", provider = "workbench"'))
    assert load_experiment("base", file=path, registry=registry).scheduler.name == "linear"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('timesteps = 100', 'timestepz = 100'), r"experiments.toml:5: experiment 'base', scheduler 'linear': unknown option 'timestepz' \(did you mean 'timesteps'\?\)"),
        (('name = "mlp"', 'name = "mpl"'), r"experiments.toml:6: experiment 'base', unknown backbone 'mpl' \(did you mean 'mlp'\?\)"),
        (('steps = 10,', 'steps = -10,'), r"experiments.toml:7: experiment 'base': option 'train.steps': Input should be greater than or equal to 1 \(got -10\)"),
        (('steps = 10,', 'stpes = 10,'), r"experiments.toml:7: experiment 'base': unknown option 'train.stpes' \(did you mean 'steps'\?\)"),
        (('width = 32', 'width = "wide"'), r"experiments.toml:6: experiment 'base', backbone 'mlp': option 'width': Input should be a valid integer"),
        (('seed = 3', 'sed = 3'), r"experiments.toml:3: experiment 'base': unknown key 'sed' \(did you mean 'seed'\?\)"),
    ],
)
def test_mistakes_name_the_file_line_experiment_component_and_option(tmp_path, registry, edit, expected):
    path = write(tmp_path, BASE.replace(*edit, 1))
    with pytest.raises(ConfigError, match=expected):
        load_experiment("base", file=path, registry=registry)


def test_unknown_experiment_lists_names_and_the_closest(tmp_path, registry):
    with pytest.raises(ConfigError) as excinfo:
        load_experiment("chlid", file=write(tmp_path, BASE), registry=registry)
    assert "no experiment 'chlid'" in str(excinfo.value) and "(did you mean 'child'?)" in str(excinfo.value)
    assert "base, child, grandchild" in excinfo.value.hint


def test_extends_of_a_missing_experiment_and_cycles(tmp_path, registry):
    path = write(tmp_path, BASE + '\n[orphan]\nextends = "bsae"\n')
    with pytest.raises(ConfigError, match=r"experiments.toml:\d+: experiment 'orphan' extends 'bsae', which is not in .*\(did you mean 'base'\?\)"):
        load_experiment("orphan", file=path, registry=registry)
    path = write(tmp_path, '[a]\nextends = "b"\n[b]\nextends = "c"\n[c]\nextends = "a"\n')
    with pytest.raises(ConfigError, match="`extends` forms a cycle: a -> b -> c -> a"):
        load_experiment("a", file=path, registry=registry)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.steps", r"--set 'train.steps': expected KEY=VALUE"),
        ("trian.steps=5", r"unknown key 'trian' \(did you mean 'train'\?\)"),
        ("train.steps=[1,", r"--set 'train.steps=\[1,': '\[1,' is not a TOML value"),
        ("train..steps=5", r"is not a dotted key"),
        ("train.stepz=5", r"unknown option 'train.stepz' \(did you mean 'steps'\?\)"),
        ("scheduler.timesteps=0", r"scheduler 'linear': option 'timesteps': Input should be greater than or equal to 1"),
    ],
)
def test_malformed_overrides(tmp_path, registry, override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_experiment("base", file=write(tmp_path, BASE), registry=registry, overrides=[override])


def test_missing_file_says_where_it_looked_and_how_to_create_one(tmp_path, registry):
    with pytest.raises(ConfigError) as excinfo:
        load_experiment("exp1", file=tmp_path / "nope.toml", registry=registry)
    assert str(tmp_path / "nope.toml") in str(excinfo.value) and "wb init" in excinfo.value.hint


def test_incompatible_loss_and_variance_is_an_error(tmp_path, registry):
    path = write(tmp_path, BASE + '\n[learned]\nextends = "base"\ndiffusion = { variance = "learned_range" }\n')
    with pytest.raises(ConfigError, match=r"experiment 'learned'.*mse.*(hybrid|vlb)"):
        load_experiment("learned", file=path, registry=registry)


def test_locate_finds_keys_in_inline_tables_and_sub_tables(tmp_path):
    path = write(tmp_path, BASE + "\n[sub]\nseed = 1\n\n[sub.train]\nsteps = 5\nlr = 0.1\n")
    f = ExperimentFile.read(path)
    assert f.locate("base", ["scheduler", "beta_end"]) == 5
    assert f.locate("base", ["train"]) == 7
    assert f.locate("sub", ["train", "lr"]) == 23
    assert f.locate("sub", ["train", "nothing"]) == 21  # the [sub.train] header
    assert f.locate("sub", []) == 18


def test_the_shipped_experiments_all_resolve(registry):
    path = Path(__file__).resolve().parents[1] / "experiments.toml"
    names = ExperimentFile.read(path).names
    assert {"exp1", "exp1_linear", "exp1_v", "exp1_vlb", "exp1_hybrid", "exp1_ddim", "exp1_dpm", "digits", "shapes32"} <= set(names)
    for name in names:
        exp = load_experiment(name, file=path, registry=registry)
        assert exp.description, f"{name} needs a one-line description"


# --- conditioning ---------------------------------------------------------------------------

CONDITIONAL = BASE + """
[cond]
extends = "base"
dataset = { name = "eight_gaussians", n = 500 }
condition = { labels = true, dropout = 0.1 }
sampler = { name = "ddim", steps = 10, guidance = 3.0 }
"""


def test_condition_table_is_validated_and_stored(tmp_path, registry):
    path = write(tmp_path, CONDITIONAL)
    exp = load_experiment("cond", file=path, registry=registry)
    assert exp.conditional and exp.num_classes == 8 and exp.condition.dropout == 0.1 and exp.sampler.guidance == 3.0
    table = exp.to_dict()
    assert table["condition"] == {"labels": True, "dropout": 0.1}
    base = load_experiment("base", file=path, registry=registry)
    assert not base.conditional and base.num_classes is None and "condition" not in base.to_dict()
    again = load_experiment("cond", file=write(tmp_path, exp.to_toml(), "stored.toml"), registry=registry)
    assert again.to_dict() == table


@pytest.mark.parametrize("override, expected", [
    ("condition.dropout=1.0", r"condition.dropout.*less than 1"),
    ("condition.dropout=-0.1", r"condition.dropout"),
    ("condition.label=true", r"label.*labels"),
    ('dataset.name="swissroll"', r"dataset 'swissroll' has no class labels"),
    ("condition.dropout=0.0", r"guidance = 3 needs an unconditional model.*dropout = 0"),
])
def test_bad_conditions_are_clear_errors(tmp_path, registry, override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_experiment("cond", file=write(tmp_path, CONDITIONAL), overrides=[override], registry=registry)


def test_guidance_on_an_unconditional_experiment_is_an_error(tmp_path, registry):
    with pytest.raises(ConfigError, match=r"guidance = 2 applies only to conditional experiments"):
        load_experiment("base", file=write(tmp_path, BASE), overrides=["sampler={ name = \"ddim\", guidance = 2.0 }"], registry=registry)


def test_the_shipped_conditional_experiments_are_conditional(registry):
    path = Path(__file__).resolve().parents[1] / "experiments.toml"
    gaussians = load_experiment("gaussians_cond", file=path, registry=registry)
    assert gaussians.num_classes == 8 and gaussians.condition.dropout > 0 and gaussians.sampler.guidance > 1
    assert [m.name for m in gaussians.metrics] == ["swd", "accuracy"]
    digits = load_experiment("digits_cond", file=path, registry=registry)
    assert digits.num_classes == 10 and digits.condition.dropout > 0 and digits.backbone.name == "unet"
