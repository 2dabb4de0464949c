"""Helpers of the reliability suite: run the real CLI in-process, build small real image folders."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from warmstart.cli import main

#: the fastest model: warmstart's own 3-layer CNN on 32 x 32 inputs, from scratch
FAST = ["--model", "custom_3_layer", "--weights", "none", "--strategy", "scratch", "--device", "cpu", "--epochs", "1"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def error(self) -> str:
        """The one `error:` line; fails unless stderr holds exactly that one line and no traceback."""
        assert "Traceback" not in self.err, self.err
        assert len(self.err_lines) == 1 and self.err_lines[0].startswith("error: "), self.err
        return self.err_lines[0]


def cli(*args: str | Path) -> Result:
    """``warmstart ARGS`` through :func:`warmstart.cli.main`, in this process; returns exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    assert code is not None, "main() returned without sys.exit"
    return Result(code, out.getvalue(), err.getvalue())


def copy_images(src: Path, dst: Path, n: int) -> list[Path]:
    """The first ``n`` JPEGs of ``src`` (sorted by name) copied into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(p for p in src.iterdir() if p.suffix == ".jpg")[:n]:
        shutil.copy(f, dst / f.name)
        out.append(dst / f.name)
    return out


def image_folder(root: Path, hymenoptera: Path, n: int = 4) -> Path:
    """root/{ants,bees}/ with ``n`` real hymenoptera JPEGs each."""
    for c in ("ants", "bees"):
        copy_images(hymenoptera / "train" / c, root / c, n)
    return root


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> content): to show that a failed command changed nothing."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(path: Path) -> list[str]:
    """Temporary files of interrupted atomic writes (``.name.xxxx.tmp``)."""
    return sorted(p.name for p in path.rglob("*") if ".tmp" in p.name)


@contextlib.contextmanager
def one_thread():
    """Torch on one thread (a shared 2-core box; identical reductions in every process), deterministic
    algorithms restored afterwards (``--deterministic`` switches them on process-wide)."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


def env_one_thread() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}
