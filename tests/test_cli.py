"""The `wb` command line: listing, showing, plugins, init, and every user mistake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from workbench.cli import make_app

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "workbench-example"

EXPERIMENTS = """\
[tiny]
description = "a tiny experiment"
dataset   = { name = "swissroll", n = 200 }
scheduler = { name = "linear", timesteps = 100 }
backbone  = { name = "mlp", width = 16 }
train     = { steps = 5, batch_size = 32 }

[tiny_cosine]
extends = "tiny"
scheduler = { name = "cosine" }
"""


@pytest.fixture
def wb(tmp_path, monkeypatch):
    """Run `wb ARGS` in a fresh directory holding experiments.toml; returns the Result."""
    monkeypatch.chdir(tmp_path)
    for var in ("WB_EXPERIMENTS", "WB_SETTINGS", "WB_RUNS_DIR", "WB_DISABLE_PLUGINS", "WB_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "experiments.toml").write_text(EXPERIMENTS)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(make_app(), list(args), catch_exceptions=False)

    return invoke


def run_wb(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real console script in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=120,
    )


def test_help_lists_the_commands_with_one_line_help(wb):
    result = wb("--help")
    assert result.exit_code == 0
    for command in ("run", "show", "list", "plugins", "init"):
        assert command in result.output
    assert "Print the fully resolved experiment as TOML" in result.output


def test_list_shows_every_kind_with_its_provider(wb):
    result = wb("list")
    assert result.exit_code == 0
    for text in ("scheduler", "cosine", "schedulers", "workbench 0.1.0", "dataset", "backbone", "loss", "sampler"):
        assert text in result.output


def test_list_one_kind_and_json(wb):
    result = wb("list", "schedulers", "--json")
    rows = json.loads(result.output)
    assert {r["kind"] for r in rows} == {"scheduler"}
    cosine = next(r for r in rows if r["name"] == "cosine")
    assert cosine["plugin"] == "schedulers" and cosine["distribution"] == "workbench" and cosine["summary"]
    assert "options" not in cosine


def test_list_verbose_shows_options_with_type_default_and_description(wb):
    result = wb("list", "scheduler", "cosine", "--json")
    (row,) = json.loads(result.output)
    options = {o["name"]: o for o in row["options"]}
    assert options["timesteps"] == {
        "name": "timesteps", "type": "int >= 1", "default": 1000, "required": False,
        "description": "number of diffusion steps T",
    }
    text = wb("list", "schedulers", "-v").output
    assert "timesteps" in text and "int >= 1" in text and "beta_end" in text


def test_list_unknown_kind_and_name_are_clear_errors(wb):
    result = wb("list", "schedulerz")
    assert result.exit_code == 2 and "unknown component kind 'schedulerz'" in result.output
    result = wb("list", "scheduler", "cosin")
    assert result.exit_code == 2 and "did you mean 'cosine'" in result.output
    assert "Traceback" not in result.output


def test_plugins_lists_hooks_and_json(wb):
    result = wb("plugins", "--json")
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert rows["schedulers"]["hooks"] == ["register_schedulers"] and rows["schedulers"]["error"] is None
    assert "register_schedulers" in wb("plugins").output


def test_show_prints_the_resolved_experiment_as_toml(wb):
    import tomllib

    result = wb("show", "tiny_cosine", "--set", "train.steps=7")
    assert result.exit_code == 0, result.output
    data = tomllib.loads(result.output)["tiny_cosine"]
    assert data["scheduler"]["name"] == "cosine" and data["scheduler"]["provider"] == "schedulers"
    assert data["scheduler"]["timesteps"] == 100 and data["scheduler"]["s"] == 0.008
    assert data["train"]["steps"] == 7 and data["loss"]["name"] == "mse" and data["sampler"]["provider"] == "samplers"
    assert "# backbone parameters:" in result.output


@pytest.mark.parametrize(
    "args, content, expected",
    [
        (("show", "tiny"), "[tiny]\nseed = = 1\n", "experiments.toml:2:"),
        (("show", "tiy"), None, "no experiment 'tiy'"),
        (("show", "tiny", "--set", "scheduler.name=cosin"), None, "unknown scheduler 'cosin' (did you mean 'cosine'?)"),
        (("show", "tiny", "--set", "backbone.widht=3"), None, "unknown option 'widht' (did you mean 'width'?)"),
        (("show", "tiny", "--set", "train.steps=-1"), None, "option 'train.steps': Input should be greater than or equal to 1"),
        (("show", "tiny", "--set", "train.batch_size=big"), None, "option 'train.batch_size': Input should be a valid integer"),
        (("show", "tiny", "--set", "nokey"), None, "expected KEY=VALUE"),
        (("show", "tiny", "--set", "tran.steps=1"), None, "unknown key 'tran' (did you mean 'train'?)"),
        (("show", "tiny", "--set", "train.steps=[1"), None, "is not a TOML value"),
        (("show", "loop"), '[loop]\nextends = "loop"\n', "`extends` forms a cycle: loop -> loop"),
        (("show", "orphan"), '[orphan]\nextends = "nothing"\n', "extends 'nothing', which is not in"),
        (("run", "tiy"), None, "no experiment 'tiy'"),
    ],
)
def test_bad_input_gives_a_message_and_a_nonzero_exit(wb, tmp_path, args, content, expected):
    if content is not None:
        (tmp_path / "experiments.toml").write_text(content)
    result = wb(*args)
    assert result.exit_code != 0
    assert expected in result.output
    assert "Traceback" not in result.output


def test_missing_experiments_file_says_where_and_how(wb, tmp_path):
    (tmp_path / "experiments.toml").unlink()
    result = wb("show", "exp1")
    assert result.exit_code == 2
    assert str(tmp_path / "experiments.toml") in result.output and "wb init" in result.output


def test_init_writes_a_starter_file_that_resolves_and_never_overwrites(wb, tmp_path):
    (tmp_path / "experiments.toml").unlink()
    assert wb("init").exit_code == 0
    assert wb("show", "exp1").exit_code == 0
    result = wb("init")
    assert result.exit_code == 1 and "already exists" in result.output


def test_errors_from_the_real_console_script_have_no_traceback(tmp_path):
    (tmp_path / "experiments.toml").write_text(EXPERIMENTS)
    result = run_wb("show", "tiny", "--set", "scheduler.timesteps=0", cwd=tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr and "scheduler 'linear': option 'timesteps'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [("--help",), ("list",), ("list", "schedulers", "-v")])
def test_help_and_list_do_not_import_torch(args, tmp_path):
    code = (
        "import sys\nfrom workbench.cli import main\nsys.argv = ['wb', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.stderr.strip().endswith("NO TORCH"), result.stderr


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example plugin package installed (real metadata, by pip) into a private folder."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )
    assert (site / "workbench_example-0.1.0.dist-info" / "entry_points.txt").exists()
    return site


def test_an_installed_third_party_plugin_is_listed_and_usable(example_site, tmp_path):
    env = {"PYTHONPATH": str(example_site)}
    rows = json.loads(run_wb("list", "schedulers", "--json", env=env).stdout)
    geometric = next(r for r in rows if r["name"] == "geometric")
    assert geometric["plugin"] == "example" and geometric["distribution"] == "workbench-example"
    assert geometric["version"] == "0.1.0"

    (tmp_path / "experiments.toml").write_text(EXPERIMENTS)
    result = run_wb("show", "tiny", "--set", "scheduler.name=geometric", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'name = "geometric"' in result.stdout and 'provider = "example"' in result.stdout

    plugins = {r["name"]: r for r in json.loads(run_wb("plugins", "--json", env=env).stdout)}
    assert plugins["example"]["distribution"] == "workbench-example"
    assert plugins["example"]["hooks"] == ["register_schedulers"]


def test_a_third_party_plugin_that_fails_to_import(tmp_path):
    site = tmp_path / "site"
    info = site / "workbench_bad-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: workbench-bad\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[workbench]\nbad = workbench_bad\n")
    (site / "workbench_bad.py").write_text(textwrap.dedent("import not_a_module_anywhere\n"))
    env = {"PYTHONPATH": str(site)}

    result = run_wb("list", "schedulers", env=env)
    assert result.returncode == 0 and "cosine" in result.stdout
    assert result.stderr.count("warning:") == 1
    assert "workbench-bad" in result.stderr and "No module named 'not_a_module_anywhere'" in result.stderr

    result = run_wb("plugins", env=env)
    assert "bad" in result.stdout and "error" in result.stdout

    result = run_wb("list", env={**env, "WB_STRICT_PLUGINS": "1"})
    assert result.returncode == 1 and "plugin 'bad' from workbench-bad 0.3 failed to load" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_wb("list", env={**env, "WB_DISABLE_PLUGINS": "bad"})
    assert result.returncode == 0 and result.stderr == ""


# --- conditional runs: wb sample --class --guidance ------------------------------------------

CONDITIONAL = EXPERIMENTS + """
[cond]
extends = "tiny"
dataset = { name = "eight_gaussians", n = 200 }
condition = { labels = true, dropout = 0.1 }
sampler = { name = "ddim", steps = 5, guidance = 2.0 }
eval = { samples = 40 }

[cond_nodrop]
extends = "cond"
condition = { dropout = 0.0 }
sampler = { name = "ddim", steps = 5, guidance = 1.0 }
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A directory with a tiny conditional run, one trained without label dropout, and an unconditional one."""
    path = tmp_path_factory.mktemp("cond")
    (path / "experiments.toml").write_text(CONDITIONAL)
    old = os.getcwd()
    os.chdir(path)
    try:
        for name in ("cond", "cond_nodrop", "tiny"):
            result = CliRunner().invoke(make_app(), ["run", name, "--set", "train.steps=3"], env={"WB_RUNS_DIR": str(path / "runs")})
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    return path


@pytest.fixture
def wb_trained(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.setenv("WB_RUNS_DIR", str(trained / "runs"))
    monkeypatch.delenv("WB_EXPERIMENTS", raising=False)
    return lambda *args: CliRunner().invoke(make_app(), list(args))


def test_sample_one_class_by_index_or_name_and_all_classes_at_several_scales(wb_trained, trained):
    from PIL import Image

    result = wb_trained("sample", "cond", "--class", "3", "-n", "8", "--guidance", "2")
    assert result.exit_code == 0, result.output
    assert "8 samples per scale" in result.output
    assert wb_trained("sample", "cond", "--class", "northwest", "-n", "8").exit_code == 0
    result = wb_trained("sample", "cond", "--class", "all", "-n", "4", "--guidance", "0,1,2,4", "--npz")
    assert result.exit_code == 0, result.output
    [png] = (trained / "runs" / "cond").glob("*/samples-ddim-classall-g0-1-2-4-seed0.png")
    assert Image.open(png).width > 4 * 100  # four panels side by side
    saved = np.load(png.with_suffix(".npz"))
    assert saved["labels"].tolist() == [k for k in range(8) for _ in range(4)]
    assert saved["guidance"].tolist() == [0, 1, 2, 4] and saved["samples_3"].shape == (32, 2)


@pytest.mark.parametrize("run, args, expected", [
    ("cond", ["--class", "8"], "class 8 is out of range"),
    ("cond", ["--class", "up"], "has no class 'up'"),
    ("tiny", ["--class", "1"], "is not conditional"),
    ("tiny", ["--guidance", "2"], "applies to conditional runs only"),
    ("cond_nodrop", ["--guidance", "2"], "condition.dropout = 0"),
    ("cond", ["--guidance", "2,x"], "numbers separated by commas"),
    ("cond", ["--guidance", "-1"], ">= 0"),
])
def test_bad_class_and_guidance_are_clear_messages(wb_trained, run, args, expected):
    result = wb_trained("sample", run, "-n", "4", *args)
    assert result.exit_code != 0 and expected in " ".join(result.output.split()) and "Traceback" not in result.output


def test_version():
    from typer.testing import CliRunner

    from workbench import __version__
    from workbench.cli import make_app

    result = CliRunner().invoke(make_app(), ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"wb (workbench) {__version__}"
