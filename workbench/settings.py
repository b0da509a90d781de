"""Workbench-wide settings (not per experiment), through pydantic-settings.

Precedence, highest first: keyword arguments, `WB_*` environment variables,
the settings file, the defaults below. The settings file is TOML with the
same keys (`runs_dir = "runs"`), found at `$WB_SETTINGS`, else
`./workbench.toml` when it exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from workbench.errors import ConfigError, describe_validation_error
from workbench.toml_io import read_toml

DEFAULT_SETTINGS_FILE = "workbench.toml"


def default_cache_root() -> Path:
    """$XDG_CACHE_HOME/workbench, else ~/.cache/workbench."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "workbench"


class Settings(BaseSettings):
    """Where runs go, which device to use, which experiments file, which plugins."""

    model_config = SettingsConfigDict(env_prefix="WB_", extra="forbid")

    runs_dir: Path = Field(Path("runs"), description="where run directories are written")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    experiments: Path = Field(Path("experiments.toml"), description="the default experiments file")
    cache_dir: Path = Field(
        default_factory=default_cache_root,
        description="where the workbench keeps what it can rebuild (trained feature networks of the fd metric)",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads of torch for every run, over train.threads (default: the experiment's choice)"
    )
    strict_plugins: bool = Field(False, description="a plugin that fails to load is fatal")
    disable_plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="plugin names not to load (comma-separated in WB_DISABLE_PLUGINS)"
    )

    @field_validator("disable_plugins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("cache_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or value.startswith("cuda:"):
            return value
        raise ValueError("expected 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = settings_file()
        file_values = read_toml(path) if path is not None else {}
        return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values))


def settings_file() -> Path | None:
    """The settings file in force: $WB_SETTINGS, else ./workbench.toml if present."""
    explicit = os.environ.get("WB_SETTINGS")
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_SETTINGS_FILE)
    return default if default.is_file() else None


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and the settings file; bad values are ConfigErrors."""
    path = settings_file()
    if path is not None and not path.is_file():
        raise ConfigError(f"settings file {path} (from WB_SETTINGS) does not exist")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        where = f"settings file {path} or " if path else ""
        raise ConfigError(
            describe_validation_error(exc, Settings.model_fields, lambda option: "invalid workbench settings"),
            hint=f"check the {where}WB_* environment variables",
        ) from None
