"""What every benchmark shares: the machine, whole-process timing, the data view, tables and JSON.

The benchmarks compare warmstart with a naive baseline *in the same run* (same machine, same load, same
data, model, weights, epochs and seed), because on a shared machine only ratios measured side by side mean
anything. Each records the machine (CPU model, cores, torch version) and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
#: ImageFolder's extensions (torchvision): the data view holds only files both sides read the same way
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_data() -> Path:
    """hymenoptera_data where the tests unpack it: $WARMSTART_DATA, else the repository's .data/."""
    for root in (os.environ.get("WARMSTART_DATA"), REPO / ".data"):
        if root and (Path(root) / "hymenoptera_data" / "train").is_dir():
            return Path(root) / "hymenoptera_data"
    return REPO / ".data" / "hymenoptera_data"


def default_weights() -> Path:
    shared = Path(os.environ.get("WARMSTART_SHARED", REPO.parent / "shared"))
    return shared / "weights" / "mobilenet_v3_small-imagenet.pth"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data(), help="an ImageFolder-style folder with train/ and val/")
    p.add_argument("--weights", type=Path, default=default_weights(), help="a torchvision state_dict .pth with its .json")
    p.add_argument("--smoke", action="store_true", help="a few images and 1 epoch: checks the benchmark runs (seconds)")
    p.add_argument("--json", type=Path, default=None, help="where to write the results [default: benchmarks/results/NAME.json]")
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (kept) [default: a temporary one, removed]")
    p.add_argument("--warmstart-args", default="", help="extra options for the warmstart side, e.g. '--channels-last'")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of every process, both sides alike (OMP_NUM_THREADS) [default: torch's own]; "
                        "1 gives stable numbers on a machine shared with other work (see RESULTS.md)")
    return p


def warmstart_args(args: argparse.Namespace) -> list[str]:
    import shlex

    return shlex.split(args.warmstart_args)


def threads_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment that gives child processes ``--threads`` intra-op threads (nothing without it)."""
    return {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)} if args.threads else {}


def set_threads(args: argparse.Namespace) -> None:
    """``--threads`` for this process."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def check_inputs(args: argparse.Namespace) -> None:
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        sys.exit(f"error: {args.data} has no train/ and val/ folders; pass --data DIR (e.g. hymenoptera_data)")
    if not args.weights.is_file() or not args.weights.with_suffix(".json").is_file():
        sys.exit(f"error: no weights {args.weights} with its .json; pass --weights PATH.pth")


class Workdir:
    """A scratch folder: a temporary one removed at the end, or ``--workdir`` kept."""

    def __init__(self, path: Path | None) -> None:
        self.keep = path is not None
        self.path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="warmstart-bench-"))
        self.path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


def data_view(src: Path, dst: Path, per_class: int | None = None, splits: dict[str, str] | None = None) -> Path:
    """A symlink copy of ``src``'s train/ and val/ holding the images ImageFolder reads (no placeholder GIF).

    Both sides of every comparison read this view, so they see exactly the same images. ``per_class``
    keeps the first N images (by name) of every class and split (``--smoke``).
    """
    for split, there in (splits or {"train": "train", "val": "val"}).items():  # view's split -> src's folder
        for cls in sorted(d for d in (src / there).iterdir() if d.is_dir() and not d.name.startswith(".")):
            files = sorted(f for f in cls.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
            out = dst / split / cls.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files[:per_class] if per_class else files:
                (out / f.name).symlink_to(f.resolve())
    return dst


def count_images(view: Path) -> dict[str, int]:
    """Images per split of a :func:`data_view`."""
    return {s: sum(1 for f in (view / s).rglob("*") if f.is_symlink() or f.is_file()) for s in ("train", "val")}


def machine() -> dict[str, Any]:
    import torch
    import torchvision

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def env(**extra: str) -> dict[str, str]:
    """The environment for child processes: this checkout's src/ first on PYTHONPATH."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])])
    e.update(extra)
    return e


def run_process(cmd: Sequence[str], *, timeout: float = 3600, python: str | None = None, **extra_env: str) -> dict[str, Any]:
    """Run ``cmd`` (a list; ``python`` prepended when given) and time the whole process, start to exit."""
    full = [python or sys.executable, *map(str, cmd)]
    load = loadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(full, env=env(**extra_env), stdout=out, stderr=err, text=True)
        try:
            _, status, usage = _wait4(proc, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise SystemExit(f"error: {' '.join(map(str, full))} ran past {timeout} s")
        seconds = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"error: {' '.join(map(str, full))} exited with {code}")
    return {"seconds": round(seconds, 3), "load_before": load, "load_after": loadavg(), "stdout": stdout,
            "user_seconds": round(usage.ru_utime, 3), "system_seconds": round(usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "minor_faults": usage.ru_minflt}


def _wait4(proc: subprocess.Popen, timeout: float):
    """os.wait4 on ``proc`` (its own CPU times, peak RSS and page faults, children it waited for included)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.02)


def warmstart(args: Sequence[str], **extra_env: str) -> dict[str, Any]:
    """``python -m warmstart ARGS`` as a whole process."""
    return run_process(["-m", "warmstart", *map(str, args)], **extra_env)


def baseline(args: Sequence[str], *, python: str | None = None, **extra_env: str) -> dict[str, Any]:
    """``python benchmarks/tutorial_baseline.py ARGS`` as a whole process; its JSON result under "result"."""
    r = run_process([str(BENCH / "tutorial_baseline.py"), *map(str, args)], python=python, **extra_env)
    r["result"] = json.loads(r["stdout"].strip().splitlines()[-1])
    return r


def read_run(run_dir: Path) -> dict[str, Any]:
    """summary.json and the per-epoch rows of metrics.csv of a warmstart run directory."""
    import csv

    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {"summary": summary, "epochs": rows}


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def steady(xs: Sequence[float]) -> float:
    """The median of per-epoch figures, the first epoch (warm-up: workers, allocator, caches) left out."""
    return median(list(xs)[1:] or list(xs))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table (also readable as plain text)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in cells)])


def write_results(name: str, args: argparse.Namespace, payload: dict[str, Any]) -> Path:
    path = args.json or RESULTS / f"{name}{'-smoke' if args.smoke else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "smoke": bool(args.smoke), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": {**machine(), "threads": args.threads or "torch default"}, "warmstart_args": args.warmstart_args,
           "command": " ".join([Path(sys.executable).name, *sys.argv]), **payload}
    path.write_text(json.dumps(portable(doc, workdir=getattr(args, "workdir", None)), indent=1) + "\n")
    return path


def portable(obj: Any, *, workdir: Path | None = None) -> Any:
    """``obj`` with every absolute path of this machine rewritten so the recorded results name nothing of it.

    Inside the repository: relative to it; inside ``../shared``: as ``../shared/...``; inside the scratch
    folder (temporary ``warmstart-bench-*`` or ``--workdir``): as ``<workdir>/...``; anything else absolute:
    its file name alone. Applied to strings inside JSON documents and command lines alike.
    """
    import re

    roots = [(REPO.parent / "shared", "../shared"), (REPO, ".")]
    if workdir is not None:
        roots.insert(0, (Path(workdir).resolve(), "<workdir>"))

    def one(path: str) -> str:
        p = Path(path)
        for root, name in roots:
            for r in {root, root.resolve()}:
                if p == r or r in p.parents:
                    rel = p.relative_to(r).as_posix()
                    return name if rel == "." else f"{name}/{rel}".removeprefix("./")
        if any(part.startswith("warmstart-bench-") for part in p.parts):
            i = next(i for i, part in enumerate(p.parts) if part.startswith("warmstart-bench-"))
            return "/".join(("<workdir>", *p.parts[i + 1:]))
        return p.name

    def fix(s: str) -> str:
        return re.sub(r"(?<![\w.])/[^\s\"',=]+", lambda m: one(m.group(0)), s)

    if isinstance(obj, str):
        return fix(obj)
    if isinstance(obj, dict):
        return {k: portable(v, workdir=workdir) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, workdir=workdir) for v in obj]
    return obj
