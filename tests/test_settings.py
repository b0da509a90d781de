"""Workbench settings: defaults, WB_* variables, the settings file, bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for var in ("WB_RUNS_DIR", "WB_DEVICE", "WB_EXPERIMENTS", "WB_STRICT_PLUGINS", "WB_DISABLE_PLUGINS", "WB_SETTINGS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    s = load_settings()
    assert s.runs_dir == Path("runs") and s.device == "auto" and s.experiments == Path("experiments.toml")
    assert s.strict_plugins is False and s.disable_plugins == []


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("WB_RUNS_DIR", "/tmp/elsewhere")
    monkeypatch.setenv("WB_DEVICE", "cpu")
    monkeypatch.setenv("WB_STRICT_PLUGINS", "1")
    monkeypatch.setenv("WB_DISABLE_PLUGINS", "foo, bar")
    s = load_settings()
    assert s.runs_dir == Path("/tmp/elsewhere") and s.device == "cpu"
    assert s.strict_plugins is True and s.disable_plugins == ["foo", "bar"]


def test_settings_file_in_the_current_directory_and_env_precedence(monkeypatch, tmp_path):
    (tmp_path / "workbench.toml").write_text('runs_dir = "from_file"\ndevice = "cpu"\ndisable_plugins = ["x"]\n')
    s = load_settings()
    assert s.runs_dir == Path("from_file") and s.device == "cpu" and s.disable_plugins == ["x"]
    monkeypatch.setenv("WB_DEVICE", "cuda")
    assert load_settings().device == "cuda"


def test_settings_file_from_wb_settings(monkeypatch, tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text('experiments = "mine.toml"\n')
    monkeypatch.setenv("WB_SETTINGS", str(path))
    assert load_settings().experiments == Path("mine.toml")
    monkeypatch.setenv("WB_SETTINGS", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="missing.toml .*does not exist"):
        load_settings()


def test_bad_values_name_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("WB_DEVICE", "tpu")
    with pytest.raises(ConfigError, match="option 'device': expected 'auto', 'cpu', 'cuda'"):
        load_settings()
    monkeypatch.delenv("WB_DEVICE")
    (tmp_path / "workbench.toml").write_text("runs_dirr = 'x'\n")
    with pytest.raises(ConfigError, match="runs_dirr"):
        load_settings()
