"""Reading and writing TOML, with errors a user can act on.

A syntax error names the file, line and column and shows the offending line;
tomllib's own message gives the position only inside its text. A file is
UTF-8 (TOML says so); a leading byte-order mark, which some Windows editors
write, is accepted and dropped. Bytes that are not UTF-8 are reported with
their line and byte offset, and nesting too deep for the parser is reported
as such, never as a traceback.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from workbench.errors import ConfigError

_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_BARE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/\-]*$")


BOM = "\ufeff"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class TomlFileError(ConfigError):
    """A file that cannot be read as TOML: unreadable, not UTF-8, or a syntax error.

    `message` may show the offending line of the file; `brief` says what is
    wrong and where without quoting the file, for errors about a file the
    user did not name (one reached through `extends`).
    """

    def __init__(self, message: str, brief: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.brief = brief


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ConfigError pointing at the line."""
    return read_toml_text(path)[0]


def read_toml_text(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed file and its text (without a byte-order mark), for callers that point at lines."""
    text = read_text(path)
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(path, text, exc) from None
    except RecursionError:
        reason = "values nested too deeply (arrays or inline tables inside each other) for the TOML reader"
        raise TomlFileError(f"{path}: {reason}", f"{path}: {reason}") from None


def read_text(path: Path) -> str:
    """A TOML file's text: UTF-8, with a leading byte-order mark dropped; anything else is a TomlFileError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        reason = f"cannot read {path}: {exc.strerror or exc}"
        raise TomlFileError(reason, reason) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        if raw.startswith(_UTF16_BOMS):
            reason = f"{path}:1: the file is UTF-16 (it starts with a UTF-16 byte-order mark), not UTF-8"
        else:
            reason = f"{path}:{line}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} ({exc.reason})"
        raise TomlFileError(
            reason, reason, hint="TOML files are UTF-8: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE)"
        ) from None
    return text.removeprefix(BOM)


def _syntax_error(path: Path, text: str, exc: Exception) -> TomlFileError:
    message = str(exc)
    match = _POSITION.search(message)
    if not match:
        return TomlFileError(f"{path}: TOML syntax error: {message}", f"{path}: TOML syntax error")
    line, column = int(match.group(1)), int(match.group(2))
    reason = _POSITION.sub("", message).strip()
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    caret = " " * (max(column, 1) - 1) + "^"
    where = f"{path}:{line}:{column}: TOML syntax error: {reason}"
    return TomlFileError(f"{where}\n  {line} | {shown}\n  {' ' * len(str(line))} | {caret}", where)


def parse_value(text: str) -> Any:
    """A `--set` value: any TOML value (`200`, `1e-3`, `[16, 8]`, `"x"`), or a bare word as a string.

    Raises ValueError when the text is neither.
    """
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if _BARE_WORD.match(text):
            return text
        raise ValueError(f"{text!r} is not a TOML value") from None


def dumps(data: dict[str, Any]) -> str:
    """TOML text for nested dicts (None values are left out: TOML has no null)."""
    import tomli_w

    return tomli_w.dumps(_drop_none(data))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def parse_assignment(text: str) -> tuple[str, Any]:
    """'train.steps=200' -> ('train.steps', 200): the value parsed as TOML (a bare word is a string).

    The one reader of KEY=VALUE for `--set` and `wb sample --option`; a
    ValueError says what is wrong with the text.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError("expected KEY=VALUE")
    return key, parse_value(raw.strip())


def parse_options(assignments: list[str], flag: str, example: str) -> dict[str, Any]:
    """['steps=20', 'eta=1.0'] -> {'steps': 20, 'eta': 1.0} (values are TOML), for a repeated command-line `flag`.

    A malformed one is a ConfigError naming the flag and the text, with `example` as the hint.
    """
    options = {}
    for text in assignments:
        try:
            key, value = parse_assignment(text)
        except ValueError as exc:
            raise ConfigError(f"{flag} {text!r}: {exc}", hint=f"write {flag} option=value, e.g. {flag} {example}") from None
        options[key] = value
    return options
