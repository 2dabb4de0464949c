"""The command line's helpers: what was given on the command line, and the command line itself.

The options themselves are declared once, in :mod:`warmstart.options` (``click_options(command)`` makes a
command's click options from them). Only click and the standard library at import: ``warmstart --help`` and
argument errors stay free of torch.
"""

from __future__ import annotations

import click


def given() -> set[str]:
    """The options and arguments named on the command line (what a resumed run must agree with)."""
    ctx = click.get_current_context()
    return {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}


def argv() -> list[str] | None:
    """The command line being run (recorded in config.json), passed down from :func:`main`."""
    obj = click.get_current_context().find_root().obj
    return obj.get("argv") if isinstance(obj, dict) else None
