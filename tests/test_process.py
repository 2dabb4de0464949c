"""A warmstart command's own process freezes the long-lived heap (gc.freeze); a program importing warmstart does not."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).parents[1] / "src")


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_the_command_process_freezes_once_torch_and_torchvision_are_imported():
    out = _run("import gc; from warmstart import _process; _process.own(); import warmstart.data.dataset; "
               "import sys; print(gc.get_freeze_count(), 'torch._dynamo' in sys.modules)")
    frozen, dynamo = out.split()
    assert int(frozen) > 100_000  # torch and torchvision's modules, functions and classes
    assert dynamo == "False"


def test_importing_warmstart_in_a_program_leaves_its_collector_alone():
    out = _run("import gc; import warmstart.data.dataset; print(gc.get_freeze_count())")
    assert int(out) == 0


def test_an_in_process_command_does_not_freeze(capsys):
    from warmstart.cli import main

    before = gc.get_freeze_count()
    try:
        main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert gc.get_freeze_count() == before
    assert capsys.readouterr().out.startswith("warmstart")


def test_the_console_command_exits_cleanly_after_freezing(tmp_path):
    # python -m warmstart owns its process: a real command's output and exit status are untouched
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "warmstart", "inspect", "mobilenet_v3_small", "--json"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.lstrip().startswith("{") and done.stderr == ""
