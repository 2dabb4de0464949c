"""User-facing errors.

Anything the user can fix (a bad path, a bad flag value, a broken image, a weights file of another
architecture) is raised as :class:`UserError`. The CLI prints it as one line ``error: ...`` and exits
with code 2; library callers get an ordinary exception they can catch.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """A problem with the user's input: what is wrong, where, and what to do."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """A UserError for an unknown name, listing the choices and suggesting the closest one."""
    choices = sorted(set(choices))
    listing = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    return UserError(f'unknown {kind} "{name}"{did_you_mean(name, choices)}; choose one of: {listing}')
