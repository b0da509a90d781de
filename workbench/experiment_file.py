"""Reading experiment files: finding the file, `extends`, `--set` overrides.

An experiments file is TOML with one table per experiment. This module
turns it into the raw (unvalidated) dict of one experiment; the schema in
`workbench.experiment` validates that dict. Errors name the file and, where
it can be found, the line.

Experiment names become folder names (`runs/<name>/<run id>/`), so a name
is checked when the file is read: ASCII letters, digits, `_`, `-` and `.`,
starting with a letter, digit or `_`, at most 100 characters. A name such
as `../../x`, `/tmp/x` or `a/b` is an error that points at its line.

`extends = "base"` names an experiment of the same file; `extends =
"other.toml:base"` one in another file, whose path is relative to the
folder of the file that holds the `extends` (never to the current
directory). Every file reached that way must lie inside the folder of the
experiments file that was read first (after following symlinks): an
`extends` cannot read a file outside the project. An error about such a
file never quotes its lines: a file that is not TOML is reported as "not a
TOML experiments file" with its path and the line. Chains may be as long as
you like (they are followed in a loop, not by recursion); a cycle is an
error that shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from workbench.errors import ConfigError, did_you_mean
from workbench.toml_io import TomlFileError, parse_assignment, read_toml_text, tomllib

STARTER_HINT = "run `wb init` to write a starter experiments.toml here, or pass --file PATH"

NAME_RULE = (
    "names become folder names under the runs directory, so they may use only ASCII letters, digits, "
    "'_', '-' and '.', must start with a letter, digit or '_', and have at most 100 characters"
)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")


def check_name(name: str, where: str) -> str:
    """`name` if it is a valid experiment name, else a ConfigError at `where` ('file:line') saying the rule."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: experiment name {name!r} is not allowed: {NAME_RULE}",
            hint="rename the experiment, e.g. " + repr(_suggest_name(name)),
        )
    return name


def _suggest_name(name: str) -> str:
    """'../../escape' -> 'escape', 'a/b' -> 'a_b', 'my exp' -> 'my_exp'."""
    parts = [part for part in re.split(r"[^A-Za-z0-9_\-]+", name) if part.strip("-")]
    return "_".join(parts).lstrip("-")[:100] or "experiment"


@dataclass
class ExperimentFile:
    """One parsed experiments file and its text (kept to point errors at lines)."""

    path: Path
    data: dict[str, Any]
    lines: list[str] = field(repr=False)

    @classmethod
    def read(cls, path: Path) -> ExperimentFile:
        """Parse `path`; every top-level key must be an experiment table with a valid name."""
        if not path.is_file():
            where = f"{path} is a directory" if path.exists() else f"no experiments file at {path.resolve()}"
            raise ConfigError(where, hint=STARTER_HINT)
        data, text = read_toml_text(path)
        file = cls(path, data, text.splitlines())
        for name, value in data.items():
            where = f"{path}:{file._index[1].get(name, 1)}"
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{where}: top-level key '{name}' is not an experiment table",
                    hint=f"write experiments as tables: [{name}] followed by its keys",
                )
            check_name(name, where)
        return file

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
        for number, line, section, key in self._index[0].get(name, ()):
            if key is None:  # a [header]
                if section == [name]:
                    header_line = number
                elif keys[: len(section) - 1] == section[1:]:
                    best = number
                continue
            path = section[1:] + key
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

    @cached_property
    def _index(self) -> tuple[dict[str, list[tuple[int, str, list[str], list[str] | None]]], dict[str, int]]:
        """The lines of each experiment's tables, and the line where each top-level key first appears.

        Each line is (number, text, its table's dotted key, its own dotted key; None for a header).
        Built once, so that locating keys along a long `extends` chain does not rescan the file.
        """
        lines_of: dict[str, list[tuple[int, str, list[str], list[str] | None]]] = {}
        first: dict[str, int] = {}
        section: list[str] = []
        for number, line in enumerate(self.lines, start=1):
            header = _HEADER.match(line) or _ARRAY_HEADER.match(line)
            if header:
                section = _split_key(header.group(1))
                if section:
                    first.setdefault(section[0], number)
                    lines_of.setdefault(section[0], []).append((number, line, section, None))
                continue
            key = _key_of(line)
            if section:
                lines_of.setdefault(section[0], []).append((number, line, section, key))
            elif key:
                first.setdefault(key[0], number)
        return lines_of, first


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:"[^"\n]*"|'[^'\n]*'|[A-Za-z0-9_\-.\t ])+?)\s*=""")
_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
_KEY_PART = re.compile(r"""\s*("[^"]*"|'[^']*'|[^."'\s]+)\s*(\.|$)""")


def _split_key(text: str) -> list[str]:
    """'a."b.c".d' -> ['a', 'b.c', 'd']: a dotted TOML key, quoted parts kept whole (best effort)."""
    parts, at = [], 0
    while at < len(text):
        match = _KEY_PART.match(text, at)
        if not match:
            return [part.strip().strip("\"'") for part in text.split(".")]
        parts.append(_unquote(match.group(1)))
        at = match.end()
        if not match.group(2):
            break
    return parts


def _unquote(part: str) -> str:
    """A key part as TOML reads it: quotes removed, escapes in a "basic string" decoded."""
    if part[:1] == '"':
        try:
            return tomllib.loads(f"k = {part}")["k"]
        except tomllib.TOMLDecodeError:
            pass
    return part.strip("\"'")


def _key_of(line: str) -> list[str]:
    match = _KEY.match(line)
    return _split_key(match.group(1)) if match else []


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
) -> tuple[dict[str, Any], list[tuple[ExperimentFile, str]]]:
    """The experiment with its `extends` chain merged in, and the chain (child first) for error locations.

    `extends = "base"` names an experiment in the same file; `extends =
    "other.toml:base"` one in another file, relative to the folder of the file
    that says it, and inside the folder of `file` (see the module docstring).
    The chain is followed in a loop, so its length is not limited by Python's
    recursion limit.
    """
    root = file.path.resolve().parent
    files = {file.path.resolve(): file}
    chain: list[tuple[ExperimentFile, str, dict[str, Any]]] = []
    seen: set[tuple[Path, str]] = set()
    current, current_name = file, name
    while True:
        key = (current.path.resolve(), current_name)
        if key in seen:
            cycle = " -> ".join([*(n for _, n, _ in chain), current_name])
            raise ConfigError(f"{current.where(current_name, ['extends'])}: `extends` forms a cycle: {cycle}")
        seen.add(key)
        table = dict(current.table(current_name))
        parent_ref = table.pop("extends", None)
        chain.append((current, current_name, table))
        if parent_ref is None:
            break
        current, current_name = _parent(current, current_name, parent_ref, root, files, read)
    merged = chain[-1][2]
    for _, _, table in reversed(chain[:-1]):
        merged = deep_merge(merged, table, fields_of, slots)
    return merged, [(f, n) for f, n, _ in chain]


def _parent(
    file: ExperimentFile,
    name: str,
    parent_ref: Any,
    root: Path,
    files: dict[Path, ExperimentFile],
    read: Callable[[Path], ExperimentFile],
) -> tuple[ExperimentFile, str]:
    """The file and name that `extends = parent_ref` of experiment `name` in `file` points at."""
    def at() -> str:
        return f"{file.where(name, ['extends'])}: experiment '{name}' extends '{parent_ref}'"

    if not isinstance(parent_ref, str):
        raise ConfigError(f"{file.where(name, ['extends'])}: `extends` must be a string like \"base\" or \"other.toml:base\"")
    parent_file, parent_name = file, parent_ref
    if ":" in parent_ref:
        other, _, parent_name = parent_ref.rpartition(":")
        folder = file.path.resolve().parent
        other_path = (folder / other).resolve()
        if not other_path.is_relative_to(root):
            raise ConfigError(
                f"{at()}, but {other_path} is outside {root}, the folder of the experiments file",
                hint="an `extends` file must be inside that folder; its path is relative to the file that holds the `extends`",
            )
        if not other or not other_path.is_file():
            what = "is a folder, not a file" if other_path.is_dir() else "does not exist"
            raise ConfigError(
                f"{at()}, but {other_path} {what}",
                hint=f"the path in `extends` is relative to the folder of the file that holds it, {folder}",
            )
        if other_path not in files:
            try:
                files[other_path] = read(other_path)
            except TomlFileError as exc:  # its brief form: never quote a file the user did not name
                raise ConfigError(f"{at()}, but {other_path} is not a TOML experiments file: {exc.brief}") from None
            except ConfigError as exc:
                raise ConfigError(f"{at()}, but {other_path} is not a valid experiments file: {exc.message}", exc.hint) from None
        parent_file = files[other_path]
    if parent_name not in parent_file.data:
        raise ConfigError(
            f"{at()}, which is not in {parent_file.path}{did_you_mean(parent_name, parent_file.names)}",
            hint=f"experiments there: {', '.join(parent_file.names) or '(none)'}",
        )
    return parent_file, parent_name


# --- --set overrides ---------------------------------------------------------------


def parse_override(text: str, known: list[str]) -> dict[str, Any]:
    """'train.steps=200' -> {'train': {'steps': 200}}; the value is TOML (a bare word is a string)."""
    try:
        key, value = parse_assignment(text)
    except ValueError as exc:
        raise ConfigError(
            f"--set '{text}': {exc}",
            hint='e.g. --set train.steps=200; write strings in quotes (--set \'dataset.path="my dir"\'), numbers and [lists] as in TOML',
        ) from None
    path = key.split(".")
    if any(not part for part in path):
        raise ConfigError(f"--set '{text}': '{key}' is not a dotted key like train.steps")
    if path[0] not in known:
        raise ConfigError(
            f"--set '{text}': unknown key '{path[0]}'{did_you_mean(path[0], known)}",
            hint=f"top-level keys: {', '.join(known)}",
        )
    override: Any = value
    for part in reversed(path):
        override = {part: override}
    return override
