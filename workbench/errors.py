"""User-facing errors.

Every mistake a user can make (a typo in an experiment file, an unknown
component, a bad `--set`) raises a `WorkbenchError`. The CLI prints its
message, without a traceback, and exits non-zero. Internal bugs stay ordinary
exceptions so that they do show a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Callable


class WorkbenchError(Exception):
    """A mistake the user can fix; `hint` says how."""

    exit_code = 1
    label = "error"  # how the CLI introduces the message
    every_rank = False  # raised by every process of a distributed run at once: only rank 0 reports it

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class ConfigError(WorkbenchError):
    """An experiment, option or setting that is not valid."""

    exit_code = 2


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates that look most like `word` (for "did you mean" hints)."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[f] for f in found]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when something close exists, else ''."""
    matches = close_matches(word, candidates)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(f"'{m}'" for m in matches) + "?)"


def describe_validation_error(
    exc: Any, fields: Iterable[str], prefix: Callable[[str], str], qualify: str = ""
) -> str:
    """A pydantic ValidationError as one line per problem, naming the option, what was expected, and close names.

    `prefix(option)` says where the problem is (file:line, experiment,
    component); `qualify` goes before the option's name ('train.' for a
    section). The same words for components, experiment sections and settings:

        <prefix>: unknown option 'widht' (did you mean 'width'?); its options are: width, depth
        <prefix>: option 'timesteps': Input should be greater than or equal to 1 (got -3)
    """
    fields = list(fields)
    lines = []
    for err in exc.errors():
        option = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if not option:  # a check across options (a model validator)
            lines.append(f"{prefix(option)}: {message}")
        elif err["type"] == "extra_forbidden":
            known = ", ".join(fields) or "(none)"
            lines.append(
                f"{prefix(option)}: unknown option '{qualify}{option}'{did_you_mean(option, fields)}; "
                f"its options are: {known}"
            )
        else:
            lines.append(f"{prefix(option)}: option '{qualify}{option}': {message} (got {err.get('input')!r})")
    return "\n".join(lines)
