"""The one progress-bar helper (engine/console.py): no other module of warmstart draws bars or imports tqdm, and
in a Jupyter kernel without ipywidgets a bar is the text bar, drawn without any warning."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient
from PIL import Image

import warmstart
from warmstart.engine import console

SRC = Path(warmstart.__file__).resolve().parent


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_console_module_imports_tqdm():
    offenders = {str(p.relative_to(SRC)): sorted(m for m in _imports(ast.parse(p.read_text())) if m.split(".")[0] == "tqdm")
                 for p in SRC.rglob("*.py") if p.name != "console.py" or p.parent.name != "engine"}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert "tqdm.auto" not in _imports(ast.parse((SRC / "engine" / "console.py").read_text()))


def test_the_bar_is_the_text_bar_in_a_kernel_without_ipywidgets_and_the_widget_with_it(monkeypatch):
    from tqdm.std import tqdm as text_bar

    monkeypatch.setattr(console, "in_notebook", lambda: True)
    monkeypatch.setitem(__import__("sys").modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    assert console._bar() is text_bar
    monkeypatch.setattr(console, "in_notebook", lambda: False)
    assert console._bar() is text_bar
    # where bars are off (quiet), progress() hands back the iterable itself and byte_bar() is a disabled bar
    with console.quiet():
        items = [1, 2, 3]
        assert console.progress(items) is items
        with console.byte_bar(10, "x") as bar:
            assert bar.disable


def _made_images(root: Path, per_class: int = 3) -> Path:
    for k, cls in enumerate(("red", "blue")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20 + i, 16), (200 * (1 - k), 10 * i, 200 * k)).save(root / cls / f"{i}.png")
    return root


def test_a_kernel_without_ipywidgets_shows_the_decoding_bar_and_no_warning(tmp_path, monkeypatch):
    # a real Jupyter kernel (this interpreter), importing warmstart's dataset module and decoding a few images:
    # before, data/dataset.py imported tqdm.auto, which warns "IProgress not found" in such a kernel
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")]))
    folder = _made_images(tmp_path / "images")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys, warnings\n"
        "sys.modules['ipywidgets'] = None  # whether or not it is installed here: a kernel without ipywidgets\n"
        "warnings.simplefilter('always')\n"
        "import warmstart as ws\n"
        "from warmstart.data import ImageDataset, Preprocess\n"
        f"splits = ws.load_data({str(folder)!r}, val_fraction=0.34)\n"
        "ds = ImageDataset(splits.train, Preprocess(resize=8, crop=8), train=True, cache_dir=False)\n"
        "print(len(ds), 'decoded')\n")])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    outputs = nb.cells[0].outputs
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert [o for o in outputs if o.output_type == "error"] == []
    assert stdout.strip() == "4 decoded"
    assert "Warning" not in stderr and "IProgress" not in stderr, stderr
    # the text bar, to stderr as on a terminal, left complete (cleared, it would leave an empty stderr box)
    last = stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("decoding train images (images): 100%|") and "| 4/4 [" in last, stderr
