"""The run directory: one format for every command.

    <out>/config.json    everything needed to rerun it (the command line and every resolved option)
    <out>/metrics.csv    one row per epoch
    <out>/summary.json   final figures (keys documented in the README and kept stable)
    <out>/checkpoint.pt  the last completed epoch (model, optimizer, schedule, history) for --resume
    <out>/best.pt        the model weights at the best validation accuracy
    <out>/events/        TensorBoard events with --tensorboard

Only the main process writes. Every write is atomic.
"""

from __future__ import annotations

import csv
import io as _io
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from warmstart.engine import io
from warmstart.engine.distributed import init_from_env, world
from warmstart.errors import UserError

#: the command line being run, set by warmstart.cli.main (None for library calls)
COMMAND_LINE: list[str] | None = None



@contextmanager
def command_line(argv: list[str] | None):
    """Record ``argv`` as the command line of the runs made inside (e.g. each part of ``warmstart demo``)."""
    global COMMAND_LINE
    before, COMMAND_LINE = COMMAND_LINE, argv
    try:
        yield
    finally:
        COMMAND_LINE = before


CONFIG, METRICS, SUMMARY, CHECKPOINT, BEST = "config.json", "metrics.csv", "summary.json", "checkpoint.pt", "best.pt"


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


class Run:
    def __init__(self, out: Path | str, command: str, config: dict[str, Any], *, resume: bool = False, tensorboard: bool = False):
        self.dir = Path(out)
        self.command = command
        self.config = {"command": command, "argv": list(COMMAND_LINE) if COMMAND_LINE else None, **config}
        self.resume = resume
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
        return Run(self.dir / name, self.command, config, resume=self.resume, tensorboard=self._tensorboard).start()

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
            self._tb = SummaryWriter(log_dir=str(self.dir / "events"))
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
