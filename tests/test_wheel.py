"""The built wheel, installed into a fresh virtual environment outside the repository, works: `warmstart --version`,
`warmstart demo --quick`, and examples/lecture.ipynb in a clean folder with its data and weights from a mirror
folder named by $WARMSTART_MIRROR (the second of the notebook's three places; see test_notebook.py).

How it stays fast: the wheel is built with ``pip wheel --no-deps --no-build-isolation`` (setuptools of this
environment, nothing downloaded) from a copy of the sources (the build writes build/ and *.egg-info, not into the
repository); the venv is made ``--without-pip`` and the wheel installed into it by this environment's pip
(``pip --python VENV``), ``--no-deps --no-index``. Its dependencies (torch, torchvision, ... and the Jupyter kernel)
come from this environment: a ``.pth`` file in the venv's site-packages appends this environment's site-packages to
its sys.path, after its own, so the wheel's warmstart wins (checked: ``warmstart.__file__`` lies in the venv), and
torch is not installed again (GBs). Path lines in a .pth are not scanned for further .pth files, so this
environment's editable install of warmstart is not picked up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import warmstart
from _notebook import NOTEBOOK, REPO, check_results, kernel_for, run_notebook

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(work / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (whl,) = (work / "dist").glob("warmstart-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_warmstart_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return env


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points into the repository or picks the data's place."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "WARMSTART_MIRROR", "WARMSTART_BASE_URL", "WARMSTART_DATA_ROOT",
                        "WARMSTART_OFFLINE")}
    return {**env, **extra}


def test_the_wheel_holds_every_module_and_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = Path(warmstart.__file__).resolve().parent
    needed = {f"warmstart/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert needed - names == set(), "files of the package missing from the wheel (package data?)"
    assert any(n.endswith("entry_points.txt") for n in names)


def test_the_installed_wheel_runs_outside_the_repository(venv, tmp_path):
    python, cli = venv / "bin" / "python", venv / "bin" / "warmstart"
    env = _clean_env(WARMSTART_CACHE_DIR=str(tmp_path / "cache"))
    where = subprocess.run([str(python), "-c", "import warmstart; print(warmstart.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel's warmstart, not the sources
    version = subprocess.run([str(cli), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, f"warmstart, version {warmstart.__version__}")
    demo = subprocess.run([str(cli), "demo", "--quick", "--quiet", "--out", str(tmp_path / "demo")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    report = Path(demo.stdout.strip().splitlines()[-1])
    assert report == tmp_path / "demo" / "report.html" and report.stat().st_size > 10_000


def test_the_notebook_runs_from_the_wheel_with_a_mirror(venv, weights_dir, tmp_path, monkeypatch):
    kernel_for(None, tmp_path, monkeypatch, python=str(venv / "bin" / "python"))
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the kernel imports the wheel's warmstart
    monkeypatch.setenv("WARMSTART_MIRROR", str(weights_dir.parent))
    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "lecture"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    nb = run_notebook(folder / NOTEBOOK.name, folder)
    check_results(nb, "a folder with a mirror")
    assert (tmp_path / "cache" / "datasets" / "cifar10" / "test" / "truck").is_dir()  # unpacked from the mirror
