"""User-facing errors.

Every mistake a user can make (a typo in an experiment file, an unknown
component, a bad `--set`) raises a `WorkbenchError`. The CLI prints its
message, without a traceback, and exits non-zero. Internal bugs stay ordinary
exceptions so that they do show a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(Exception):
    """A mistake the user can fix; `hint` says how."""

    exit_code = 1
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
