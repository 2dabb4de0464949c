"""examples/lecture.ipynb: executed headless through a real Jupyter kernel; every cell must run, and its last
cells assert the lecture's results. The notebook is committed without outputs, so diffs stay small.

It must run unchanged in three places, and its first cell must say which: this repository (data and weights from
../shared, data sets in .data/); a clean folder with a mirror of ../shared named by $WARMSTART_MIRROR (run from the
built wheel in tests/test_wheel.py); and online, every file downloaded from an HTTP server on 127.0.0.1
($WARMSTART_BASE_URL). In each, no cell may write to stderr except the lines :func:`unexpected_stderr` allows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

import warmstart
from _notebook import NOTEBOOK, REPO, check_results, kernel_for, run_notebook, tree, unexpected_stderr
from _serve import serve

def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None] == [], \
        "clear the notebook's outputs before committing (Kernel > Restart & Clear Outputs, or nbformat)"
    assert nb.metadata.kernelspec.name == "python3"
    # it fetches its data and weights by name, wherever it runs: no file it needs is named by a path
    source = "\n".join(c.source for c in code)
    for name in ("cifar10-jpeg", "hymenoptera", "mobilenet_v3_small-imagenet"):
        assert f'ws.fetch("{name}"' in source, name
    assert ".pth" not in source and "unpack-data" not in source and "FileNotFoundError" not in source


def test_the_stderr_filter_allows_bars_and_fetch_lines_only():
    node = nbformat.v4.new_code_cell()
    node.outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
        "\rdecoding train images (cifar10):  40%|####      | 320/800 [00:01<00:02, 300img/s]\r   \r"
        "fetch: hymenoptera: unpacked /m/data/hymenoptera_data.tar (mirror) into /r/hymenoptera_data (398 files)\n"
        "/x/y.py:3: UserWarning: something\n  warnings.warn(\nTqdmWarning: IProgress not found.\n"))]
    nb = nbformat.v4.new_notebook(cells=[node])
    assert unexpected_stderr(nb) == ["/x/y.py:3: UserWarning: something", "  warnings.warn(",
                                     "TqdmWarning: IProgress not found."]


@pytest.mark.slow
def test_the_lecture_notebook_runs_in_the_repository(data_root, weights_dir, tmp_path, monkeypatch):
    # the kernel imports the same warmstart as the tests; the data the tests use (.data/, or $WARMSTART_DATA)
    kernel_for(str(Path(warmstart.__file__).resolve().parents[1]), tmp_path, monkeypatch)
    monkeypatch.setenv("WARMSTART_DATA_ROOT", str(data_root))
    place = "this repository"
    if weights_dir.parent != REPO.parent / "shared":  # the shared folder is elsewhere ($WARMSTART_SHARED)
        monkeypatch.setenv("WARMSTART_MIRROR", str(weights_dir.parent))
        place = "a folder with a mirror"
    examples_before = tree(NOTEBOOK.parent)
    nb = run_notebook(NOTEBOOK, NOTEBOOK.parent)
    check_results(nb, place)
    assert tree(NOTEBOOK.parent) == examples_before, "executing the notebook wrote files next to it"


@pytest.mark.slow
def test_the_lecture_notebook_runs_online_from_a_loopback_server(weights_dir, tmp_path, monkeypatch):
    # a clean folder outside the repository; every data set and weights file downloaded from an HTTP server on
    # 127.0.0.1 that serves the shared folder (base URL overridden), into a fresh cache
    kernel_for(str(Path(warmstart.__file__).resolve().parents[1]), tmp_path, monkeypatch)
    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "lecture"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    with serve(weights_dir.parent) as (url, seen):
        monkeypatch.setenv("WARMSTART_BASE_URL", url)
        nb = run_notebook(folder / NOTEBOOK.name, folder)
    check_results(nb, "online")
    assert sorted(seen) == ["/data/cifar10-jpeg.tar.gz", "/data/hymenoptera_data.tar",
                            "/weights/mobilenet_v3_small-imagenet.json", "/weights/mobilenet_v3_small-imagenet.pth"]
    assert (tmp_path / "cache" / "datasets" / "hymenoptera_data" / "val" / "bees").is_dir()
