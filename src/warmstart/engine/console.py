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
    """Whether this process is a Jupyter kernel (where tqdm.auto draws the notebook bar)."""
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


def progress(it: Iterable[T], total: int | None = None, desc: str = "") -> Iterable[T]:
    """A tqdm bar on an interactive terminal or in Jupyter (tqdm.auto: the notebook bar); the plain iterable elsewhere."""
    from warmstart.engine.distributed import world

    if _quiet or not world().main or not (sys.stderr.isatty() or in_notebook()):
        return it
    return _bar()(it, total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def _bar():
    """tqdm's notebook bar in Jupyter when ipywidgets is there to draw it, else the text bar (tqdm.auto would
    warn "IProgress not found" at every bar in a kernel without ipywidgets)."""
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            pass
        else:
            from tqdm.notebook import tqdm

            return tqdm
    from tqdm.std import tqdm

    return tqdm
