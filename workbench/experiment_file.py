"""Reading experiment files: finding the file, `extends`, `--set` overrides.

An experiments file is TOML with one table per experiment. This module
turns it into the raw (unvalidated) dict of one experiment; the schema in
`workbench.experiment` validates that dict. Errors name the file and, where
it can be found, the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from workbench.errors import ConfigError, did_you_mean
from workbench.toml_io import parse_value, read_toml

STARTER_HINT = "run `wb init` to write a starter experiments.toml here, or pass --file PATH"


@dataclass
class ExperimentFile:
    """One parsed experiments file and its text (kept to point errors at lines)."""

    path: Path
    data: dict[str, Any]
    lines: list[str] = field(repr=False)

    @classmethod
    def read(cls, path: Path) -> ExperimentFile:
        if not path.is_file():
            where = f"{path} is a directory" if path.exists() else f"no experiments file at {path.resolve()}"
            raise ConfigError(where, hint=STARTER_HINT)
        data = read_toml(path)
        for name, value in data.items():
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{path}:{_line_of_key(path, name)}: top-level key '{name}' is not an experiment table",
                    hint=f"write experiments as tables: [{name}] followed by its keys",
                )
        return cls(path, data, path.read_text(encoding="utf-8").splitlines())

    @property
    def names(self) -> list[str]:
        return list(self.data)

    def table(self, name: str) -> dict[str, Any]:
        """The experiment's own table, or a ConfigError listing the names and the closest one."""
        if name not in self.data:
            names = ", ".join(self.names) or "(none)"
            raise ConfigError(
                f"no experiment '{name}' in {self.path}{did_you_mean(name, self.names)}",
                hint=f"experiments in this file: {names}",
            )
        return self.data[name]

    def locate(self, name: str, keys: list[str]) -> int | None:
        """Best-effort line number of `keys` (e.g. ['train', 'steps']) inside experiment `name`.

        Falls back to the closest enclosing table, then to the experiment's header.
        """
        header_line = best = None
        section: list[str] = []
        for number, line in enumerate(self.lines, start=1):
            header = _HEADER.match(line)
            if header:
                section = [part.strip().strip('"') for part in header.group(1).split(".")]
                if section == [name]:
                    header_line = number
                elif section[:1] == [name] and keys[: len(section) - 1] == section[1:]:
                    best = number
                continue
            if section[:1] != [name]:
                continue
            path = section[1:] + _key_of(line)
            if not path or keys[: len(path)] != path:
                continue
            rest = keys[len(path):]
            if not rest or re.search(rf"\b{re.escape(rest[-1])}\s*=", line):
                return number
            best = number
        return best or header_line

    def where(self, name: str, keys: list[str] | None = None) -> str:
        """'path:line' for messages."""
        line = self.locate(name, keys or [])
        return f"{self.path}:{line}" if line else str(self.path)


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\".]+)\s*=")


def _key_of(line: str) -> list[str]:
    match = _KEY.match(line)
    return [part.strip().strip('"') for part in match.group(1).split(".")] if match else []


def _line_of_key(path: Path, key: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _key_of(line)[:1] == [key]:
            return number
    return 1


def find_experiments_file(explicit: Path | None, default: Path) -> Path:
    """The file to read: --file if given, else the settings' experiments file (WB_EXPERIMENTS)."""
    path = explicit if explicit is not None else default
    if not path.exists():
        looked = f"looked for {path.resolve()}"
        if explicit is None:
            looked += " (the default; set WB_EXPERIMENTS or pass --file to read another)"
        raise ConfigError(f"no experiments file found: {looked}", hint=STARTER_HINT)
    return path


# --- extends: deep merge with component-aware rules ------------------------------

FieldsOf = Callable[[str, str], set[str]]
"""fields_of(kind, component_name) -> the option names that component accepts."""


def deep_merge(base: dict[str, Any], update: dict[str, Any], fields_of: FieldsOf, slots: dict[str, str]) -> dict[str, Any]:
    """`update` merged over `base`, recursively.

    A component table (one of `slots`, e.g. 'scheduler' -> kind 'scheduler')
    that changes its `name` keeps only the inherited options the new
    component accepts: `scheduler = { name = "cosine" }` over a linear schedule
    keeps `timesteps` but drops `beta_end`, which cosine does not have.
    """
    merged = dict(base)
    for key, value in update.items():
        old = merged.get(key)
        if key in slots:
            old, value = _as_table(old), _as_table(value)
        if isinstance(old, dict) and isinstance(value, dict):
            if key in slots and "name" in value and _bare(value["name"]) != _bare(old.get("name", "")):
                accepted = fields_of(slots[key], value["name"])
                old = {k: v for k, v in old.items() if k in accepted}
                old.pop("provider", None)
            merged[key] = deep_merge(old, value, fields_of, {})
        else:
            merged[key] = value
    return merged


def _as_table(value: Any) -> Any:
    """`sampler = "ddim"` is short for `sampler = { name = "ddim" }`."""
    return {"name": value} if isinstance(value, str) else value


def _bare(name: str) -> str:
    return str(name).rpartition(":")[2]


def resolve_extends(
    file: ExperimentFile,
    name: str,
    fields_of: FieldsOf,
    slots: dict[str, str],
    read: Callable[[Path], ExperimentFile] = ExperimentFile.read,
    _chain: tuple[tuple[Path, str], ...] = (),
) -> tuple[dict[str, Any], list[tuple[ExperimentFile, str]]]:
    """The experiment with its `extends` chain merged in, and the chain (child first) for error locations.

    `extends = "base"` names an experiment in the same file; `extends =
    "other.toml:base"` one in another file, relative to this one.
    """
    key = (file.path.resolve(), name)
    if key in _chain:
        cycle = " -> ".join(n for _, n in (*_chain, key))
        raise ConfigError(f"{file.where(name, ['extends'])}: `extends` forms a cycle: {cycle}")
    table = dict(file.table(name))
    parent_ref = table.pop("extends", None)
    if parent_ref is None:
        return table, [(file, name)]
    if not isinstance(parent_ref, str):
        raise ConfigError(f"{file.where(name, ['extends'])}: `extends` must be a string like \"base\" or \"other.toml:base\"")
    parent_file, parent_name = file, parent_ref
    if ":" in parent_ref:
        other, _, parent_name = parent_ref.rpartition(":")
        other_path = (file.path.parent / other)
        if not other_path.is_file():
            raise ConfigError(f"{file.where(name, ['extends'])}: experiment '{name}' extends '{parent_ref}', but {other_path} does not exist")
        parent_file = read(other_path)
    if parent_name not in parent_file.data:
        raise ConfigError(
            f"{file.where(name, ['extends'])}: experiment '{name}' extends '{parent_ref}', "
            f"which is not in {parent_file.path}{did_you_mean(parent_name, parent_file.names)}",
            hint=f"experiments there: {', '.join(parent_file.names)}",
        )
    parent, chain = resolve_extends(parent_file, parent_name, fields_of, slots, read, (*_chain, key))
    return deep_merge(parent, table, fields_of, slots), [(file, name), *chain]


# --- --set overrides ---------------------------------------------------------------


def parse_override(text: str, known: list[str]) -> dict[str, Any]:
    """'train.steps=200' -> {'train': {'steps': 200}}; the value is TOML (a bare word is a string)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. --set train.steps=200")
    path = key.split(".")
    if any(not part for part in path):
        raise ConfigError(f"--set '{text}': '{key}' is not a dotted key like train.steps")
    if path[0] not in known:
        raise ConfigError(
            f"--set '{text}': unknown key '{path[0]}'{did_you_mean(path[0], known)}",
            hint=f"top-level keys: {', '.join(known)}",
        )
    try:
        value = parse_value(raw.strip())
    except ValueError as exc:
        raise ConfigError(
            f"--set '{text}': {exc}",
            hint='write strings in quotes (--set \'dataset.path="my dir"\'), numbers and [lists] as in TOML',
        ) from None
    override: Any = value
    for part in reversed(path):
        override = {part: override}
    return override
