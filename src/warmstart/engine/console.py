"""What a run says while it runs: progress bars on a terminal, one line per epoch, nothing with --quiet."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def log(msg: str) -> None:
    """One line to stderr (the main process only; silent with --quiet)."""
    from warmstart.engine.distributed import world

    if not _quiet and world().main:
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    """A warning line: shown even with --quiet."""
    from warmstart.engine.distributed import world

    if world().main:
        print(f"warning: {msg}", file=sys.stderr, flush=True)


def progress(it: Iterable[T], total: int | None = None, desc: str = "") -> Iterable[T]:
    """A tqdm bar on an interactive terminal; the plain iterable elsewhere."""
    from warmstart.engine.distributed import world

    if _quiet or not world().main or not sys.stderr.isatty():
        return it
    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
