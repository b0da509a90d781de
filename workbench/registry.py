"""The plugin manager and the component registry.

Plugins are found through the `workbench` entry-point group (the built-in
ones in `plugins/` included), loaded into a pluggy PluginManager, and asked
through the `register_<kind>s(register)` hooks for their components. The
registry remembers which plugin, distribution and version provided each one.

Nothing is loaded at import time: `Registry.load()` builds a fresh plugin
manager each time it is called, so tests can build their own.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import TracebackType
from typing import Any

import pluggy
from pydantic import ValidationError

from workbench import hookspecs
from workbench.components import KINDS, Component, normalize_kind
from workbench.errors import ConfigError, WorkbenchError, describe_validation_error, did_you_mean

ENTRY_POINT_GROUP = "workbench"
BUILTIN_DISTRIBUTION = "workbench"  # the built-in components ship with the workbench itself


@dataclass(frozen=True)
class Provider:
    """Who provided a component: the plugin and the distribution it came from."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"{self.plugin}{dist}"

    def matches(self, name: str) -> bool:
        """`provider:name` may name the plugin or its distribution."""
        return name in (self.plugin, self.distribution)

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    cls: type[Component]
    provider: Provider


@dataclass
class PluginInfo:
    """One plugin as `wb plugins` shows it; `error` is set when it failed to load."""

    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


class PluginLoadError(WorkbenchError):
    """A plugin failed to load while WB_STRICT_PLUGINS is set."""


class Registry:
    """Every registered component, by kind and name, with its provider."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self._entries: dict[str, list[Entry]] = {kind: [] for kind in KINDS}
        self._warned: set[tuple[str, str]] = set()

    # --- loading --------------------------------------------------------------

    @classmethod
    def load(
        cls,
        *,
        entry_points: bool = True,
        modules: Iterable[tuple[str, Any]] = (),
        disabled: Iterable[str] = (),
        strict: bool = False,
    ) -> Registry:
        """A fresh registry: plugins from entry points, plus `(name, module)` pairs given directly."""
        registry = cls()
        disabled = set(disabled)
        if entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in disabled:
                    continue
                dist = ep.dist.name if ep.dist else None
                version = ep.dist.version if ep.dist else None
                try:
                    plugin = ep.load()
                except Exception as exc:  # a third party's import error must not break wb
                    registry._failed(ep.name, dist, version, exc, strict)
                    continue
                registry.add_plugin(ep.name, plugin, dist, version, strict=strict)
        for name, plugin in modules:
            if name not in disabled:
                registry.add_plugin(name, plugin, strict=strict)
        return registry

    def add_plugin(
        self,
        name: str,
        plugin: Any,
        distribution: str | None = None,
        version: str | None = None,
        *,
        strict: bool = False,
    ) -> None:
        """Register one plugin with pluggy and collect the components it registers."""
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # duplicate plugin name, or a hook that does not exist
            self._failed(name, distribution, version, exc, strict)
            return
        info = PluginInfo(name, distribution, version)
        provider = Provider(name, distribution, version)
        collected: list[Entry] = []
        try:
            for caller in self.pm.get_hookcallers(plugin) or []:
                info.hooks.append(caller.name)
            for kind, hook_name in hookspecs.COMPONENT_HOOKS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin:
                        impl.function(register=self._registrar(kind, provider, collected))
        except Exception as exc:
            self.pm.unregister(plugin)
            self._failed(name, distribution, version, exc, strict)
            return
        info.hooks.sort()
        self.plugins.append(info)
        for entry in collected:
            self._entries[entry.kind].append(entry)

    def _registrar(self, kind: str, provider: Provider, collected: list[Entry]):
        base = KINDS[kind]

        def register(component_cls: type) -> type:
            if not (isinstance(component_cls, type) and issubclass(component_cls, base)):
                raise TypeError(
                    f"register_{kind}s registered {component_cls!r}, which is not a "
                    f"subclass of workbench.{base.__name__}"
                )
            if not component_cls.name:
                raise TypeError(f"{component_cls.__name__} has no class-level `name`")
            collected.append(Entry(kind, component_cls.name, component_cls, provider))
            return component_cls

        return register

    def _failed(
        self, name: str, dist: str | None, version: str | None, exc: BaseException, strict: bool
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        where = f"plugin '{name}'" + (f" from {dist} {version}" if dist else "")
        if strict:
            raise PluginLoadError(
                f"{where} failed to load: {error}",
                hint="unset WB_STRICT_PLUGINS to continue without it, or add it to WB_DISABLE_PLUGINS",
            )
        print(
            f"warning: {where} failed to load and is skipped: {error} "
            "(see `wb plugins`; WB_DISABLE_PLUGINS silences this)",
            file=sys.stderr,
        )
        self.plugins.append(PluginInfo(name, dist, version, error=error))

    # --- lookup ---------------------------------------------------------------

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Registered components of one kind (or all), sorted by kind then name."""
        kinds = [self.kind(kind)] if kind else list(KINDS)
        return [e for k in kinds for e in sorted(self._entries[k], key=lambda e: (e.name, e.provider.plugin))]

    def names(self, kind: str) -> list[str]:
        return sorted({e.name for e in self._entries[self.kind(kind)]})

    @staticmethod
    def kind(kind: str) -> str:
        """Normalise 'schedulers'/'scheduler'; a ConfigError for an unknown kind."""
        try:
            return normalize_kind(kind)
        except ValueError:
            raise ConfigError(
                f"unknown component kind '{kind}'{did_you_mean(kind, KINDS)}",
                hint="kinds: " + ", ".join(KINDS),
            ) from None

    def get(self, kind: str, name: str) -> Entry:
        """The component `name` (or `provider:name`) of `kind`, or a ConfigError saying why not."""
        kind = self.kind(kind)
        provider, _, bare = name.rpartition(":")
        candidates = [e for e in self._entries[kind] if e.name == bare]
        if provider:
            candidates = [e for e in candidates if e.provider.matches(provider)]
        if len(candidates) == 1:
            return candidates[0]
        builtin = [e for e in candidates if e.provider.builtin]
        if not provider and len(builtin) == 1:  # a plugin must not change what an existing experiment means
            self._warn_shadowed(builtin[0], [e for e in candidates if e is not builtin[0]])
            return builtin[0]
        if not candidates:
            known = self.names(kind)
            raise ConfigError(
                f"unknown {kind} '{name}'{did_you_mean(bare, known)}",
                hint=f"registered {kind}s: {', '.join(known) or '(none)'} (see `wb list {kind}s`)",
            )
        providers = " and ".join(f"'{e.provider}'" for e in candidates)
        choices = ", ".join(f"'{e.provider.plugin}:{bare}'" for e in candidates)
        raise ConfigError(
            f"{kind} '{bare}' is provided by both {providers}",
            hint=f"pick one as {choices}",
        )

    def _warn_shadowed(self, builtin: Entry, others: list[Entry]) -> None:
        if (builtin.kind, builtin.name) in self._warned:
            return
        self._warned.add((builtin.kind, builtin.name))
        plugins = " and ".join(f"'{e.provider}'" for e in others)
        choices = " or ".join(f"'{e.provider.plugin}:{e.name}'" for e in others)
        print(
            f"warning: {builtin.kind} '{builtin.name}' is also registered by {plugins}; '{builtin.name}' means the "
            f"built-in one (write {choices} for the plugin's)",
            file=sys.stderr,
        )

    def culprit(self, exc: BaseException) -> tuple[str, str] | None:
        """The plugin whose code raised `exc`, and where ("file:line"), or None if no plugin's code is in its traceback.

        The innermost frame of a plugin's hook or component class (or of a
        module a plugin registered) wins. An error re-raised from a DataLoader
        worker carries its traceback as text: its file names are matched instead.
        """
        codes, modules, files = self._plugin_code()
        frames = [(tb.tb_frame, tb.tb_lineno) for tb in _walk(exc.__traceback__)]
        for frame, line in reversed(frames):
            name = codes.get(frame.f_code) or modules.get(frame.f_globals.get("__name__", ""))
            if name:
                return name, f"{frame.f_code.co_filename}:{line}"
        for file, line in reversed(re.findall(r'File "([^"]+)", line (\d+)', str(exc))):
            if file in files:
                return files[file], f"{file}:{line}"
        return None

    def _plugin_code(self) -> tuple[dict[Any, str], dict[str, str], dict[str, str]]:
        codes: dict[Any, str] = {}
        modules: dict[str, str] = {}
        for name, plugin in self.pm.list_name_plugin():
            if inspect.ismodule(plugin) and plugin.__name__ in sys.modules:
                modules.setdefault(plugin.__name__, name)
            for caller in self.pm.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        codes[getattr(impl.function, "__code__", None)] = name
        for entries in self._entries.values():
            for entry in entries:
                for value in list(vars(entry.cls).values()):
                    function = getattr(value, "__func__", value)
                    if inspect.isfunction(function):
                        codes[function.__code__] = entry.provider.plugin
                if entry.cls.__module__ in sys.modules:
                    modules.setdefault(entry.cls.__module__, entry.provider.plugin)
        files = {}
        for module, name in modules.items():
            file = getattr(sys.modules[module], "__file__", None)
            if file:
                files[file] = name
        codes.pop(None, None)
        return codes, modules, files

    def build(self, kind: str, name: str, /, **options: Any) -> Component:
        """An instance of component `name` with its options validated."""
        entry = self.get(kind, name)
        return validate_component(entry, options)


def validate_component(entry: Entry, options: dict[str, Any], where: str = "") -> Component:
    """Validate `options` with the component's model; errors name the option and close matches."""
    try:
        return entry.cls(**options)
    except ValidationError as exc:
        message = describe_validation_error(exc, entry.cls.model_fields, lambda option: f"{where}{entry.kind} '{entry.name}'")
        raise ConfigError(message) from None


def _walk(tb: TracebackType | None) -> Iterable[TracebackType]:
    while tb is not None:
        yield tb
        tb = tb.tb_next


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line; for an error re-raised from a DataLoader worker, the worker's own."""
    text = str(exc).strip()
    if "Original Traceback" in text:  # torch.utils.data's ExceptionWrapper: the worker's traceback as text
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1].strip() + " (in a DataLoader worker)"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_default: Registry | None = None


def default_registry(*, reload: bool = False) -> Registry:
    """The registry of the installed plugins, loaded once per process under the current settings."""
    global _default
    if _default is None or reload:
        from workbench.settings import load_settings

        settings = load_settings()
        _default = Registry.load(disabled=settings.disable_plugins, strict=settings.strict_plugins)
    return _default


def build(kind: str, name: str, /, **options: Any) -> Component:
    """`wb.build("scheduler", "cosine", timesteps=1000)`: a validated component instance."""
    return default_registry().build(kind, name, **options)
