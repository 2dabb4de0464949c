"""examples/lecture.ipynb: executed headless through a real Jupyter kernel; every cell must run, and its last
cells assert the lecture's results. The notebook is committed without outputs, so diffs stay small."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import warmstart

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "lecture.ipynb"
CELL_TIMEOUT = int(os.environ.get("WARMSTART_NOTEBOOK_CELL_TIMEOUT", "600"))  # seconds; a stuck cell fails the test


def _prepend(path: str, variable: str) -> str:
    return os.pathsep.join([path] + [p for p in os.environ.get(variable, "").split(os.pathsep) if p])


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None] == [], \
        "clear the notebook's outputs before committing (Kernel > Restart & Clear Outputs, or nbformat)"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.slow
def test_the_lecture_notebook_runs_and_its_results_hold(data_root, weights_dir, tmp_path, monkeypatch):
    # the kernel: python3 of this very interpreter (a kernelspec of our own, found first on JUPYTER_PATH),
    # importing the same warmstart as the tests; the data and weights these tests use; temporary files in tmp_path
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    src = str(Path(warmstart.__file__).resolve().parents[1])
    monkeypatch.setenv("JUPYTER_PATH", _prepend(str(tmp_path / "jupyter"), "JUPYTER_PATH"))
    monkeypatch.setenv("PYTHONPATH", _prepend(src, "PYTHONPATH"))
    monkeypatch.setenv("WARMSTART_DATA", str(data_root))
    monkeypatch.setenv("WARMSTART_SHARED", str(weights_dir.parent))
    monkeypatch.setenv("TMPDIR", str(tmp_path))

    examples_before = _tree(NOTEBOOK.parent)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:  # names the cell and shows its traceback
        pytest.fail(f"a cell of {NOTEBOOK.name} failed:\n{e}", pytrace=False)

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "all of the lecture's results hold" in text  # the last cell ran to its end
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"expected the filter pictures and the two depth plots inline, got {len(images)} images"
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(html) >= 2, "ws.train's and ws.compare's results should show themselves inline (HTML)"
    assert _tree(NOTEBOOK.parent) == examples_before, "executing the notebook wrote files next to it"
