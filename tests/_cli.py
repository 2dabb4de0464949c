"""Run the warmstart CLI in this process from a test."""

from __future__ import annotations

import pytest


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``warmstart ARGV`` through warmstart.cli.main in this process: (exit code, stdout, stderr)."""
    from warmstart.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err
