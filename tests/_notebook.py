"""Executing examples/lecture.ipynb headless through a real Jupyter kernel (nbclient), and what every run must show."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import warmstart

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "lecture.ipynb"
CELL_TIMEOUT = int(os.environ.get("WARMSTART_NOTEBOOK_CELL_TIMEOUT", "600"))  # seconds; a stuck cell fails the test
#: the variables that choose where the notebook's data and weights come from: cleared, then set by each test
PLACE_ENV = ("WARMSTART_MIRROR", "WARMSTART_BASE_URL", "WARMSTART_DATA_ROOT", "WARMSTART_OFFLINE")

#: what a cell may write to stderr: warmstart's own fetch lines, and progress bars (text bars draw to stderr when a
#: kernel has no ipywidgets: "decoding train images (cifar10):  40%|####      | 320/800 [...]", or blank redraws)
ALLOWED_STDERR = (re.compile(r"^fetch: [\w-]+: (unpacked|downloaded) "),
                  re.compile(r"^(decoding|downloading) [^:]*: +\d+%\|.*\|"),
                  re.compile(r"^\s*$"))


def prepend(path: str, variable: str) -> str:
    return os.pathsep.join([path] + [p for p in os.environ.get(variable, "").split(os.pathsep) if p])


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


def unexpected_stderr(nb) -> list[str]:
    """The stderr lines of an executed notebook that :data:`ALLOWED_STDERR` does not allow (warnings included)."""
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stderr")
    return [line for line in re.split(r"[\r\n]", text) if not any(p.search(line) for p in ALLOWED_STDERR)]


def run_notebook(notebook: Path, folder: Path) -> nbformat.NotebookNode:
    """Execute ``notebook`` with ``folder`` as its working folder, with the python3 kernel of :func:`kernel_for`;
    fails the test, naming the cell, if a cell fails."""
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    except CellExecutionError as e:  # names the cell and shows its traceback
        pytest.fail(f"a cell of {notebook.name} failed:\n{e}", pytrace=False)
    return nb


def check_results(nb, place: str) -> None:
    """What every place must show: the place line first, the lecture's checks passed, pictures and tables inline,
    nothing unexpected on stderr."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stdout = [o.text for o in outputs if o.output_type == "stream" and o.name == "stdout"]
    assert stdout and stdout[0].startswith(f"warmstart {warmstart.__version__}, {place}: "), stdout[:1]
    assert len(stdout[0].strip().splitlines()) == 1, stdout[0]  # one line says where
    text = "".join(stdout)
    assert "all of the lecture's results hold" in text  # the last cell ran to its end
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"expected the filter pictures and the two depth plots inline, got {len(images)} images"
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) >= 2, "ws.train's and ws.compare's results should show themselves inline (HTML)"
    assert unexpected_stderr(nb) == []


def kernel_for(python_src: str | None, tmp_path: Path, monkeypatch, python: str = sys.executable) -> Path:
    """A python3 kernelspec of ``python`` (default: this very interpreter) in tmp_path, found first on JUPYTER_PATH;
    with ``python_src``, the kernel imports warmstart from there. Temporary files go to tmp_path. The variables of
    :data:`PLACE_ENV` are cleared."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (warmstart test)", "language": "python", "metadata": {"debugger": False}}))
    monkeypatch.setenv("JUPYTER_PATH", prepend(str(tmp_path / "jupyter"), "JUPYTER_PATH"))
    if python_src:
        monkeypatch.setenv("PYTHONPATH", prepend(python_src, "PYTHONPATH"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    for name in PLACE_ENV:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "jupyter"
