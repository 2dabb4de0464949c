"""What a run says while it runs: progress bars on a terminal, one line per epoch, nothing with --quiet."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """Silence the log and the progress bars inside (``ws.train(..., quiet=True)``); restored afterwards."""
    global _quiet
    before, _quiet = _quiet, bool(on) or _quiet
    try:
        yield
    finally:
        _quiet = before


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where the bar is drawn as a notebook widget, see _bar)."""
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


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


def _shown() -> bool:
    """Whether progress bars are drawn here: the main process, not --quiet, on a terminal or in a Jupyter kernel."""
    from warmstart.engine.distributed import world

    return not _quiet and world().main and (sys.stderr.isatty() or in_notebook())


def progress(it: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """A progress bar over ``it`` where :func:`_shown` (the notebook bar in Jupyter when ipywidgets is there,
    else the text bar); the plain iterable elsewhere. The only progress bar in warmstart: nothing else imports tqdm."""
    if not _shown():
        return it
    bar = _bar()
    return bar(it, total=total, desc=desc, unit=unit, leave=_leave(bar), dynamic_ncols=True, file=sys.stderr)


def byte_bar(total: int | None, desc: str):
    """A bar to advance by hand (``.update(nbytes)``, ``.close()``; a context manager), counting bytes: for
    downloads. Where :func:`progress` would draw nothing it is tqdm's disabled bar, which does nothing."""
    shown = _shown()
    cls = _bar() if shown else _text_bar()
    return cls(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=_leave(cls),
               dynamic_ncols=True, file=sys.stderr, disable=not shown)


def _leave(bar) -> bool:
    """Whether a finished bar stays: on a terminal and as a notebook widget it goes; the text bar in a notebook
    stays, complete (cleared, it would leave an empty stderr box in the cell's output)."""
    return in_notebook() and bar is _text_bar()


def _bar():
    """tqdm's notebook bar in Jupyter when ipywidgets is there to draw it, else the text bar. Not tqdm.auto:
    in a kernel without ipywidgets it warns "IProgress not found" (TqdmWarning) on import and at every bar."""
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm

            return tqdm
    return _text_bar()


def _text_bar():
    from tqdm.std import tqdm

    return tqdm
