"""workbench.testing and `wb check`: the built-ins pass every check; each broken fixture fails the check naming its fault."""

from __future__ import annotations

import json
import types

import pytest
from typer.testing import CliRunner

import broken_components as broken
from workbench import registry as registry_module
from workbench.cli import make_app
from workbench.components import Sampler
from workbench.hookspecs import hookimpl
from workbench.registry import PluginInfo, Registry
from workbench.testing import CHECKS, CheckError, check_component, check_registered, parametrize_with_checks

pytestmark = pytest.mark.usefixtures("one_thread")


def failed(results) -> set[str]:
    return {r.check for r in results if not r.passed}


# --- the built-ins pass -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k, checks in CHECKS.items() if checks])
def test_every_registered_component_passes_every_check(registry, kind):
    """The whole registry (built-ins and any installed plugin) at default options, as `wb check` runs it."""
    failures = {}
    for name in registry.names(kind):
        if any(option.required for option in registry.get(kind, name).cls.options()):
            continue  # a user's files (folder, npz): checked below with files made here
        results = check_registered(registry, kind, name)
        assert results, f"{kind} '{name}': no checks ran"
        if failed(results):
            failures[name] = [f"{r.check}: {r.figure} (limit {r.limit})" for r in results if not r.passed]
    assert not failures, failures


def test_terminal_snr_is_a_warning_not_a_failure(registry):
    """scaled_linear (Stable Diffusion's) keeps 6.8% of the signal at T: reported, flagged, not failed."""
    results = check_registered(registry, "scheduler", "scaled_linear")
    snr = next(r for r in results if r.check == "terminal SNR near 0")
    assert snr.passed and snr.warning and snr.verdict == "warn" and "0.0683" in snr.figure
    linear = next(r for r in check_registered(registry, "scheduler", "linear") if r.check == "terminal SNR near 0")
    assert linear.verdict == "pass"


# --- broken fixtures fail the check that names the fault ---------------------------------------


def test_off_by_one_sampler_fails_samples_match_the_data():
    results = check_component("sampler", broken.OffByOneSampler)
    assert {r.check for r in results if r.check.startswith("samples match the data")} <= failed(results)
    # the contract holds; only the math fails (through the guidance wrapper too)
    assert all(name.startswith(("samples match the data", "guidance")) for name in failed(results))


def test_non_monotone_schedule_fails_alpha_bar_decreasing():
    results = check_component("scheduler", broken.NonMonotoneScheduler)
    assert "alpha-bar strictly decreasing" in failed(results)
    assert "deterministic" not in failed(results)


def test_backbone_ignoring_t_fails_depends_on_t():
    assert failed(check_component("backbone", broken.TimeBlindBackbone)) == {"output depends on t"}


def test_loss_ignoring_importance_weights_fails_that_check():
    assert failed(check_component("loss", broken.UnweightedVLB)) == {"importance weights keep the mean"}


def test_loss_with_bound_weighted_in_nats_fails_the_bound_check():
    assert failed(check_component("loss", broken.NatsVLB)) == {"bound averages to wb.nll"}


def test_datasets_of_a_users_files_pass(registry, png_folder, tmp_path):
    import numpy as np

    assert not failed(check_registered(registry, "dataset", "folder", {"path": str(png_folder), "size": 8}))
    np.savez(tmp_path / "points.npz", x=np.random.default_rng(0).uniform(-1, 1, (50, 2)).astype("float32"))
    assert not failed(check_registered(registry, "dataset", "npz", {"path": str(tmp_path / "points.npz")}))


def test_off_grid_dataset_fails_range_and_levels():
    assert failed(check_component("dataset", broken.OffGridDataset)) == {
        "values in [-1, 1]", "levels consistent with the values"
    }


def test_metric_that_ignores_the_samples_fails_the_ordering():
    assert failed(check_component("metric", broken.BlindMetric)) == {"data scores better than perturbed data"}


def test_a_component_that_raises_fails_with_the_exception_named():
    class Raising(broken.NonMonotoneScheduler):
        name = "raising"

        def betas(self):
            raise RuntimeError("no betas today")

    results = check_component("scheduler", Raising)
    assert results and not any(r.passed for r in results)
    assert all("RuntimeError: no betas today" in r.figure for r in results)


# --- for a plugin's own suite -------------------------------------------------------------------


@parametrize_with_checks("scheduler", broken.NonMonotoneScheduler, timesteps=40)
def test_parametrizer_gives_one_test_per_check(check, request):
    assert request.node.callspec.id == check.name
    if check.name in ("betas", "monotone"):
        with pytest.raises(AssertionError, match="limit"):
            check()
    else:
        assert check()


def test_parametrizer_ids_are_the_check_names():
    mark = parametrize_with_checks("sampler", wb_ddim())
    assert mark.kwargs["ids"] == [name for name, _ in CHECKS["sampler"]]


def wb_ddim() -> Sampler:
    import workbench as wb

    return wb.build("sampler", "ddim")


# --- wb check -----------------------------------------------------------------------------------


@pytest.fixture
def wb_with(monkeypatch):
    """`wb ARGS` against a registry of the built-ins plus the broken fixtures (and a failed import)."""

    def use(*extra: PluginInfo):
        module = types.ModuleType("broken_plugin")
        module.register_schedulers = hookimpl(lambda register: register(broken.NonMonotoneScheduler))
        module.register_backbones = hookimpl(lambda register: register(broken.TimeBlindBackbone))
        reg = Registry.load(modules=[("broken_plugin", module)])
        reg.plugins.extend(extra)
        monkeypatch.setattr(registry_module, "_default", reg)
        return lambda *args: CliRunner().invoke(make_app(), list(args), env={"COLUMNS": "200"})

    return use


def test_wb_check_passes_a_builtin_with_a_table(wb_with):
    result = wb_with()("check", "scheduler", "cosine", "--set", "timesteps=200")
    assert result.exit_code == 0, result.output + result.stderr
    for word in ("check", "figure", "limit", "verdict", "alpha-bar strictly decreasing", "T = 200"):
        assert word in result.output


def test_wb_check_fails_naming_the_failed_check(wb_with):
    result = wb_with()("check", "backbone", "time_blind")
    assert result.exit_code != 0
    assert "output depends on t" in result.stderr and "1 check(s) failed" in result.stderr
    as_json = wb_with()("check", "scheduler", "non_monotone", "--json")
    assert as_json.exit_code != 0
    verdicts = {r["check"]: r["verdict"] for r in json.loads(as_json.stdout)}
    assert verdicts["alpha-bar strictly decreasing"] == "fail" and verdicts["deterministic"] == "pass"


def test_wb_check_reports_a_plugin_import_error(wb_with):
    info = PluginInfo("workbench_foo", "workbench-foo", "0.1.0", error="ModuleNotFoundError: No module named 'scipy'")
    result = wb_with(info)("check", "sampler", "foo")
    assert result.exit_code != 0
    assert "unknown sampler 'foo'" in result.stderr and "No module named 'scipy'" in result.stderr
    assert "workbench_foo" in result.stderr


def test_wb_check_refuses_a_bad_option(wb_with):
    result = wb_with()("check", "sampler", "ddim", "--set", "stepz=5")
    assert result.exit_code != 0 and "stepz" in result.stderr


def test_check_error_is_a_workbench_error():
    with pytest.raises(CheckError):
        check_component("sampler", broken.NonMonotoneScheduler)


@pytest.mark.parametrize(
    "folder, module, kind, name",
    [("workbench-euler", "workbench_euler", "sampler", "euler"), ("workbench-tinyconv", "workbench_tinyconv", "backbone", "tinyconv")],
)
def test_the_example_plugins_pass_their_checks(monkeypatch, folder, module, kind, name):
    """examples/workbench-euler and -tinyconv, registered the way their entry points would, pass `wb check`."""
    import importlib
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / folder))
    sys.modules.pop(module, None)
    plugin = importlib.import_module(module)
    reg = Registry.load(entry_points=False, modules=[(module, plugin)])
    results = check_registered(reg, kind, name)
    assert results and not failed(results)


def test_nfe_table_counts_model_evaluations(registry):
    from workbench.testing import nfe_table_named, sampler_nfe_table

    rows = nfe_table_named(registry, "dpm_solver", [], [5, 20])
    assert [(r["steps"], r["evaluations"]) for r in rows] == [(5, 5), (20, 20)]
    assert rows[1]["sw"] < rows[0]["sw"]  # more evaluations, closer to the exact chain

    class NoSteps(Sampler):
        name = "no_steps"

    with pytest.raises(CheckError, match="steps"):
        sampler_nfe_table(NoSteps(), [5])


def test_wb_check_nfe_refuses_what_is_not_a_list_of_steps(wb_with):
    result = wb_with()("check", "scheduler", "linear", "--nfe", "x")
    assert result.exit_code != 0 and "--nfe" in result.stderr


def test_wb_check_scheduler_picture(wb_with, tmp_path):
    from PIL import Image

    out = tmp_path / "linear.png"
    result = wb_with()("check", "scheduler", "linear", "--set", "timesteps=100", "--picture", str(out))
    assert result.exit_code == 0, result.stderr
    assert Image.open(out).size[0] > 8 * 100 and "written to" in result.stderr
    refused = wb_with()("check", "backbone", "mlp", "--picture", str(out))
    assert refused.exit_code != 0 and "--picture is for schedulers" in refused.stderr


def test_a_check_warns_in_pytest_and_options_of_an_instance_are_validated(registry):
    from workbench.testing import checks_for

    scaled = registry.get("scheduler", "scaled_linear").cls
    terminal = next(c for c in checks_for("scheduler", scaled) if c.name == "terminal_snr")
    with pytest.warns(UserWarning, match="terminal SNR"):
        terminal()
    with pytest.raises(CheckError, match="timesteps"):
        checks_for("scheduler", scaled(), timesteps=0)
    assert checks_for("scheduler", scaled(timesteps=20), beta_start=0.001)[0].component.timesteps == 20


def test_min_snr_weight_with_the_wrong_v_denominator_fails_min_snr():
    assert failed(check_component("loss", broken.WrongMinSNR)) == {"min-SNR weighting (v)"}
    assert failed(check_component("loss", broken.WrongMinSNR, min_snr_gamma=1.0)) == {"min-SNR weighting (v)"}
