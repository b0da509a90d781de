"""Reading and writing TOML, with errors a user can act on.

A syntax error names the file, line and column and shows the offending line;
tomllib's own message gives the position only inside its text.
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


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a ConfigError pointing at the line."""
    text = path.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_describe_syntax_error(path, text, exc)) from None


def _describe_syntax_error(path: Path, text: str, exc: Exception) -> str:
    message = str(exc)
    match = _POSITION.search(message)
    if not match:
        return f"{path}: TOML syntax error: {message}"
    line, column = int(match.group(1)), int(match.group(2))
    reason = _POSITION.sub("", message).strip()
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    caret = " " * (max(column, 1) - 1) + "^"
    return (
        f"{path}:{line}:{column}: TOML syntax error: {reason}\n"
        f"  {line} | {shown}\n"
        f"  {' ' * len(str(line))} | {caret}"
    )


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
