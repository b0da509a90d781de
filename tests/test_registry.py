"""The plugin manager and registry: providers, duplicates, broken plugins, validation."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest
from pydantic import Field

import workbench as wb
from workbench.errors import ConfigError
from workbench.registry import PluginLoadError, Registry


def make_plugin(name: str, *classes: type, kind: str = "schedulers") -> types.ModuleType:
    """A plugin module registering `classes` through the `register_<kind>` hook."""
    module = types.ModuleType(name)

    def hook(register):
        for cls in classes:
            register(cls)

    hook.__name__ = f"register_{kind}"
    setattr(module, f"register_{kind}", wb.hookimpl(hook))
    return module


class Linear(wb.Scheduler):
    """A second 'linear', clashing with the built-in one."""

    name = "linear"
    slope: float = Field(1.0, gt=0, description="slope")


class Flat(wb.Scheduler):
    """Constant betas."""

    name = "flat"
    beta: float = Field(0.01, gt=0, lt=1, description="the constant beta")


def test_builtins_are_registered_through_entry_points(registry):
    entry = registry.get("scheduler", "cosine")
    assert entry.provider.plugin == "schedulers"
    assert entry.provider.distribution == "workbench"
    assert entry.provider.version == wb.__version__
    assert {"linear", "cosine", "sigmoid", "scaled_linear", "quadratic"} <= set(registry.names("schedulers"))
    info = {p.name: p for p in registry.plugins}["schedulers"]
    assert info.error is None and info.hooks == ["register_schedulers"]


def test_kind_names_accept_singular_and_plural(registry):
    assert registry.kind("Schedulers") == "scheduler"
    assert registry.kind("losses") == "loss"
    with pytest.raises(ConfigError, match="unknown component kind 'schedular'.*'scheduler'"):
        registry.kind("schedular")


def test_a_plugin_given_directly_records_its_provider():
    registry = Registry.load(entry_points=False, modules=[("mine", make_plugin("mine", Flat))])
    entry = registry.get("scheduler", "flat")
    assert entry.cls is Flat and entry.provider.plugin == "mine" and entry.provider.distribution is None


def test_a_plugin_shadowing_a_built_in_name_leaves_the_built_in_with_one_warning(registry, capsys):
    """An existing experiment that says `linear` keeps meaning the built-in; `other:linear` picks the plugin's."""
    registry.add_plugin("other", make_plugin("other", Linear), "workbench-other", "2.0")
    entry = registry.get("scheduler", "linear")
    assert entry.provider.plugin == "schedulers" and entry.provider.distribution == "workbench"
    err = capsys.readouterr().err
    assert "scheduler 'linear' is also registered by 'other (workbench-other 2.0)'" in err
    assert "means the built-in one" in err and "'other:linear'" in err
    registry.get("scheduler", "linear")
    assert capsys.readouterr().err == ""  # one warning per registry
    assert registry.get("scheduler", "other:linear").cls is Linear
    assert registry.get("scheduler", "workbench-other:linear").cls is Linear  # a distribution name works too
    assert registry.get("scheduler", "schedulers:linear").provider.distribution == "workbench"
    # wb list shows both
    assert [e.provider.plugin for e in registry.entries("scheduler") if e.name == "linear"] == ["other", "schedulers"]


def test_duplicate_names_of_two_plugins_are_an_error_naming_both_providers():
    registry = Registry.load(entry_points=False, modules=[("one", make_plugin("one", Flat))])
    registry.add_plugin("other", make_plugin("other", Flat), "workbench-other", "2.0")
    with pytest.raises(ConfigError) as excinfo:
        registry.get("scheduler", "flat")
    message = str(excinfo.value)
    assert "'one'" in message and "other (workbench-other 2.0)" in message
    assert "'one:flat'" in message and "'other:flat'" in message
    assert registry.get("scheduler", "other:flat").provider.plugin == "other"


def test_unknown_component_names_the_kind_the_choices_and_the_closest(registry):
    with pytest.raises(ConfigError) as excinfo:
        registry.get("scheduler", "cosin")
    assert "unknown scheduler 'cosin' (did you mean 'cosine'?)" in str(excinfo.value)
    assert "linear" in excinfo.value.hint and "quadratic" in excinfo.value.hint


def test_build_validates_options_and_names_close_matches(registry):
    sched = registry.build("scheduler", "cosine", timesteps=50)
    assert sched.timesteps == 50 and sched.betas().shape == (50,)
    with pytest.raises(ConfigError, match=r"scheduler 'cosine': unknown option 'timestep' \(did you mean 'timesteps'\?\)"):
        registry.build("scheduler", "cosine", timestep=50)
    with pytest.raises(ConfigError, match=r"option 'timesteps': Input should be greater than or equal to 1 \(got -3\)"):
        registry.build("scheduler", "cosine", timesteps=-3)
    with pytest.raises(ConfigError, match=r"option 'timesteps': .*integer"):
        registry.build("scheduler", "cosine", timesteps="many")


def test_a_plugin_whose_hook_raises_is_skipped_with_one_warning(capsys):
    broken = types.ModuleType("broken")

    @wb.hookimpl
    def register_schedulers(register):
        raise RuntimeError("boom")

    broken.register_schedulers = register_schedulers
    registry = Registry.load(entry_points=False, modules=[("broken", broken), ("fine", make_plugin("fine", Flat))])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "plugin 'broken'" in err and "RuntimeError: boom" in err
    rows = {p.name: p for p in registry.plugins}
    assert rows["broken"].error == "RuntimeError: boom"
    assert rows["fine"].error is None
    assert registry.names("scheduler") == ["flat"]


def test_registering_something_that_is_not_a_component_fails_the_plugin(capsys):
    registry = Registry.load(entry_points=False, modules=[("odd", make_plugin("odd", dict))])
    assert "not a subclass of workbench.Scheduler" in registry.plugins[0].error


def test_strict_mode_makes_a_failing_plugin_fatal():
    broken = make_plugin("odd", dict)
    with pytest.raises(PluginLoadError, match="plugin 'odd' failed to load"):
        Registry.load(entry_points=False, modules=[("odd", broken)], strict=True)


def write_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution (dist-info metadata + module) with a `workbench` entry point."""
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[workbench]\n{module} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("wbtest_")]:
        del sys.modules[name]


def test_an_entry_point_that_fails_to_import_does_not_break_loading(site, capsys):
    write_distribution(site, "workbench-broken", "wbtest_broken", "raise ImportError('missing dependency foo')\n")
    registry = Registry.load()
    err = capsys.readouterr().err
    assert "plugin 'wbtest_broken' from workbench-broken 1.2.3 failed to load" in err
    assert "ImportError: missing dependency foo" in err
    row = {p.name: p for p in registry.plugins}["wbtest_broken"]
    assert row.distribution == "workbench-broken" and "missing dependency foo" in row.error
    assert "cosine" in registry.names("scheduler")
    with pytest.raises(PluginLoadError, match="workbench-broken"):
        Registry.load(strict=True)


def test_disabled_plugins_are_not_loaded(site, capsys):
    write_distribution(site, "workbench-broken", "wbtest_broken", "raise ImportError('nope')\n")
    registry = Registry.load(disabled=["wbtest_broken", "samplers"])
    assert capsys.readouterr().err == ""
    names = {p.name for p in registry.plugins}
    assert "wbtest_broken" not in names and "samplers" not in names and "schedulers" in names
