"""The run directory: one format for every command (file names: :mod:`warmstart.engine.layout`).

Only the main process writes. Every write is atomic. The command line that made a run is passed in
(``argv``), never read from a global: library calls record ``None``.
"""

from __future__ import annotations

import csv
import io as _io
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from warmstart.engine import io
from warmstart.engine.distributed import init_from_env, world
from warmstart.engine.layout import BEST, CHECKPOINT, CONFIG, EVENTS, METRICS, SUMMARY
from warmstart.errors import UserError


def default_out(command: str) -> Path:
    """``runs/<command>-<time>``, with ``-2``, ``-3``, ... when that folder exists (a cell re-run in the same second)."""
    base = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def check_out(out: Path | str, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse an existing non-empty ``out`` unless it is resumed or replaced (``overwrite``: only a run directory)."""
    p = Path(out)
    if resume or not p.exists():
        return
    if not p.is_dir():
        raise UserError(f"--out {p} is a file; choose a folder")
    if not any(p.iterdir()):
        return
    if not (p / CONFIG).is_file():
        raise UserError(f"--out {p} is not empty and holds no warmstart run; choose another --out (an empty or new folder)")
    if not overwrite:
        raise UserError(f"--out {p} already holds a run ({CONFIG}); pass --resume {p} to continue it or choose another --out "
                        "(from Python: resume=OUT continues it, overwrite=True replaces it)")


@dataclass(frozen=True)
class RunSpec:
    """Where a command writes its run directory and what config.json records of the call: ``--out``,
    ``--resume``, ``overwrite`` (Python only), the options as given and the command line (``argv``; None from
    Python). Made once at the edge (:meth:`from_options`) and carried whole to :meth:`open`."""

    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    options: dict[str, Any] | None = field(default=None, compare=False)
    argv: list[str] | None = None

    @classmethod
    def from_options(cls, command: str, options: Mapping[str, Any], *, argv: list[str] | None = None,
                     recorded: Mapping[str, Any] | None = None) -> "RunSpec":
        """From a command's options: ``out`` (a fresh ``runs/<command>-<time>`` when not given, so the caller
        knows the run directory before it exists), ``resume``, ``overwrite``; ``recorded``: config.json's options
        (default: ``options`` themselves)."""
        out = options.get("out")
        return cls(out=str(out) if out else str(default_out(command)), resume=bool(options.get("resume")),
                   overwrite=bool(options.get("overwrite")), argv=argv,
                   options=dict(recorded if recorded is not None else options))

    def dir(self, command: str) -> Path:
        return Path(self.out) if self.out else default_out(command)

    def check(self) -> None:
        """Refuse an ``out`` that holds another run (see :func:`check_out`) before anything is read or written."""
        if self.out is not None:
            check_out(self.out, overwrite=self.overwrite, resume=self.resume)

    def open(self, command: str, config: Mapping[str, Any], *, tensorboard: bool = False,
             options: Mapping[str, Any] | None = None) -> "Run":
        """The started :class:`Run`: config.json holds ``{"options": ..., **config}``; ``options`` is the record
        of a library call that gave none (what its arguments were)."""
        recorded = self.options if self.options is not None else dict(options or {})
        return Run(self.dir(command), command, {"options": recorded, **config}, resume=self.resume, overwrite=self.overwrite,
                   tensorboard=tensorboard, argv=self.argv).start()


class Run:
    def __init__(self, out: Path | str, command: str, config: dict[str, Any], *, resume: bool = False, tensorboard: bool = False,
                 argv: list[str] | None = None, overwrite: bool = False):
        self.dir = Path(out)
        self.command = command
        self.config = {"command": command, "argv": list(argv) if argv else None, **config}
        self.resume = resume
        self.overwrite = overwrite and not resume
        self.rows: list[dict[str, Any]] = []
        self._tb = None
        self._tensorboard = tensorboard

    # paths
    config_path = property(lambda self: self.dir / CONFIG)
    metrics_path = property(lambda self: self.dir / METRICS)
    summary_path = property(lambda self: self.dir / SUMMARY)
    checkpoint_path = property(lambda self: self.dir / CHECKPOINT)
    best_path = property(lambda self: self.dir / BEST)

    @property
    def main(self) -> bool:
        return world().main

    def start(self) -> "Run":
        """Create the folder and write config.json (refusing to overwrite another run unless resuming).

        Under torchrun this first joins the process group, so that rank 0 alone writes.
        """
        init_from_env()
        if not self.main:
            return self
        if self.overwrite and self.dir.exists():
            check_out(self.dir, overwrite=True)
            shutil.rmtree(self.dir)
        if self.config_path.exists() and not self.resume:
            raise UserError(
                f"--out {self.dir} already holds a run (config.json); pass --resume {self.dir} to continue it or choose another --out"
            )
        io.check_writable(self.dir)
        if not self.resume:
            io.write_json(self.config_path, self.config, "config")
            return self
        io.remove_stale_temporaries(self.dir)  # a process killed mid-write left them; nobody else writes here
        if self.metrics_path.exists():
            with open(self.metrics_path, newline="") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]
        return self

    def sub(self, name: str, config: dict[str, Any]) -> "Run":
        """A run directory nested inside this one (an arm of an experiment)."""
        return Run(self.dir / name, self.command, config, resume=self.resume, tensorboard=self._tensorboard,
                   argv=self.config.get("argv")).start()

    def log_epoch(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        epoch = int(row["epoch"])
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        buf = _io.StringIO()
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        io.write_text(self.metrics_path, buf.getvalue(), "metrics")
        if self._tensorboard:
            tb = self.tensorboard()
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    tb.add_scalar(k, v, epoch)
            tb.flush()

    def tensorboard(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("--tensorboard needs the tensorboard package: pip install 'warmstart[tensorboard]'") from None
            self._tb = SummaryWriter(log_dir=str(self.dir / EVENTS))
        return self._tb

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.main:
            io.write_json(self.summary_path, summary, "summary")

    def write_json(self, name: str, obj: Any) -> Path:
        if self.main:
            io.write_json(self.dir / name, obj, name)
        return self.dir / name

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "Run":
        """``with Run(...).start() as run:``: the run is closed (its TensorBoard writer flushed) however the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_config(run_dir: Path | str) -> dict[str, Any]:
    p = Path(run_dir) / CONFIG
    if not p.is_file():
        raise UserError(f"{run_dir} is not a warmstart run directory (no {CONFIG}); pass the --out folder of an earlier run")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p} is not valid JSON ({e.msg} at line {e.lineno}); the run directory is damaged") from None


def read_summary(run_dir: Path | str) -> dict[str, Any]:
    p = Path(run_dir) / SUMMARY
    if not p.is_file():
        raise UserError(f"{run_dir} has no {SUMMARY}: the run did not finish; finish it with --resume {run_dir}")
    return json.loads(p.read_text())


#: options that never come from the resumed run: where it is, and how loud this process is
NOT_RESUMED = ("resume", "out", "quiet", "overwrite")


def merge_resume(command: str, resume: Path | str, options: Mapping[str, Any], given: Iterable[str] = (),
                 names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``options`` continued from the run in ``resume``: its config.json's options win, ``out`` becomes ``resume``.

    An option in ``given`` (named explicitly by the caller) whose value differs from the saved one is a
    UserError: a run continues as it started. ``names`` spells an option for messages (``DATA``, ``--lr``).
    """
    saved = read_config(resume)
    if saved.get("command") != command:
        raise UserError(f"--resume {resume}: that run was made by 'warmstart {saved.get('command')}', not '{command}'; "
                        f"continue it with 'warmstart {saved.get('command')} --resume {resume}'")
    saved_opts = saved.get("options", {})
    for k in given:
        if k in NOT_RESUMED or k not in saved_opts or k not in options:
            continue
        v = options[k]
        if json.loads(json.dumps(v)) != saved_opts[k]:
            was = "not given" if saved_opts[k] is None else repr(saved_opts[k])
            what = (names or {}).get(k, f"--{k.replace('_', '-')}")
            raise UserError(f"--resume {resume}: {what} is {v!r} here but {was} in that run; "
                            "drop the option to continue it, or start a new run with another --out")
    merged = {**options, **{k: v for k, v in saved_opts.items() if k in options and k not in NOT_RESUMED}}
    merged["out"] = str(resume)
    return merged


def read_history(run_dir: Path | str) -> list[dict[str, Any]]:
    """metrics.csv as a list of rows, numbers parsed (empty when the run logged no epoch)."""
    p = Path(run_dir) / METRICS
    if not p.is_file():
        return []
    with open(p, newline="") as f:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _num(v: str) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
