"""Signal diagnostics during training, for any model: per-layer statistics at init and after every epoch.

:class:`SignalDiagnostics` is an engine callback (``fit(..., callbacks=[diag])``). It measures one fixed
*probe* batch of training inputs -- one forward and one backward with
:func:`~warmstart.init.signal.signal_stats` (a :class:`~warmstart.init.signal.SignalRecorder` underneath),
in train mode, the model's ``.grad`` fields and the training RNG left alone -- at init
(:meth:`~SignalDiagnostics.start`) and at the end of every epoch. The same inputs every time make the
snapshots comparable: what changes from one to the next is the weights alone.

Files, in the arm's run directory (:meth:`~SignalDiagnostics.save`):

* ``signal.json``: ``{"probe_images": n, "nonlinearity": ..., "snapshots": [SignalStats, ...]}`` with the
  histograms; read back with :func:`load_signal`;
* ``signal.csv``: one row per (snapshot, layer), ``tag`` = ``init``, ``epoch 1``, ...; measured ``out_var``
  beside the predicted ``pred_var`` (chained from the input: x1/2 per ReLU layer for Xavier, x1 for He,
  x1/6 for PyTorch's default init) and ``pred_var_local`` (the same law from the layer's measured input);
* ``signal_layers.png`` (per-layer std of outputs and of gradients at init and a few epochs, measured
  solid, predicted dashed: Glorot & Bengio 2010 fig. 6-7, He et al. 2015 fig. 3),
  ``signal_histograms_init.png`` and ``signal_histograms_final.png``, drawn from these snapshots by
  :func:`warmstart.report.signal_plots.plot_signal` (reporting sits above init: the run calls it);
* with TensorBoard on, per layer and epoch: histograms ``signal/out/<layer>`` (and ``signal/act/<layer>``
  after its nonlinearity) and scalars ``signal/out_std/<layer>``, ``signal/grad_out_std/<layer>``,
  ``signal/pred_std/<layer>``. Histogram counts use fixed bins over [-4, 4]; values outside fall in
  the two edge buckets.

The prediction assumes a plain net (weight layers and one nonlinearity, nothing between): pass
``nonlinearity="relu"`` (or ``"linear"`` for tanh near 0) for such nets, ``None`` for anything else
(BatchNorm, residuals, pooling); the measurement itself works on any model.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from warmstart.engine import io
from warmstart.engine.layout import SIGNAL_CSV, SIGNAL_JSON
from warmstart.errors import UserError
from warmstart.init.signal import SignalStats, signal_stats



class SignalDiagnostics:
    """Engine callback recording per-layer signal statistics on a fixed probe batch (see the module doc).

    Args:
        probe: ``(x, y)``, training inputs exactly as the model sees them (normalised) and their labels;
            e.g. :func:`warmstart.init.data_init.sample_batch`.
        out_dir: where :meth:`save` writes (and the run, :func:`~warmstart.report.signal_plots.plot_signal`) (the arm's run directory).
        nonlinearity: ``"relu"``/``"linear"`` to put the plain-net prediction beside the measurement, or None.
        tensorboard: a ``SummaryWriter`` (``run.tensorboard()``) to also log histograms and scalars to, or None.
    """

    def __init__(self, probe: tuple[torch.Tensor, torch.Tensor], out_dir: str | Path, *,
                 nonlinearity: str | None = None, tensorboard: Any = None) -> None:
        x, y = probe
        if not isinstance(x, torch.Tensor) or x.numel() == 0 or len(x) != len(y):
            raise UserError("signal diagnostics: the probe must be a non-empty batch (x, y) of equal length")
        self.x, self.y = x, y
        self.out_dir = Path(out_dir)
        self.nonlinearity = nonlinearity
        self.tensorboard = tensorboard
        self.history: list[SignalStats] = []

    @property
    def init(self) -> SignalStats:
        """The snapshot taken by :meth:`start`."""
        if not self.history:
            raise RuntimeError("SignalDiagnostics.start(model) was not called")
        return self.history[0]

    def measure(self, model: nn.Module, tag: str, step: int) -> SignalStats:
        """One snapshot of ``model`` on the probe (tag e.g. ``"epoch 3"``); logged to TensorBoard at ``step``."""
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            stats = signal_stats(model, self.x.to(device), self.y.to(device), nonlinearity=self.nonlinearity, tag=tag)
        self.history.append(stats)
        if self.tensorboard is not None:
            _log_tensorboard(self.tensorboard, stats, step)
        return stats

    def start(self, model: nn.Module) -> SignalStats:
        """The snapshot at init: call it before ``fit``."""
        return self.measure(model, "init", 0)

    def __call__(self, model: nn.Module, row: dict[str, Any]) -> None:
        """The engine's per-epoch callback."""
        epoch = int(row["epoch"])
        self.measure(model, f"epoch {epoch}", epoch)

    def restore(self, epochs_done: int) -> bool:
        """On ``--resume``: reload the snapshots of the first ``epochs_done`` epochs (and init) from this
        directory's ``signal.json``; False (nothing loaded) when there is none."""
        path = self.out_dir / SIGNAL_JSON
        if not path.is_file():
            return False
        self.history = [s for s in load_signal(path) if s.tag == "init" or _epoch(s.tag) <= epochs_done]
        return bool(self.history)

    def save(self) -> list[Path]:
        """Write ``signal.json`` and ``signal.csv`` (atomically); returns their paths."""
        doc = {"probe_images": len(self.x), "nonlinearity": self.nonlinearity,
               "snapshots": [s.to_json_dict() for s in self.history]}
        json_path, csv_path = self.out_dir / SIGNAL_JSON, self.out_dir / SIGNAL_CSV
        io.write_text(json_path, json.dumps(doc), "signal statistics")
        rows = [row for s in self.history for row in s.to_dicts()]
        buf = _io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        io.write_text(csv_path, buf.getvalue(), "signal statistics")
        return [json_path, csv_path]

    def finish(self) -> list[Path]:
        """:meth:`save` (the pictures are the report's: :func:`warmstart.report.signal_plots.plot_signal`);
        closes nothing (the TensorBoard writer belongs to the run)."""
        if not self.history:
            return []
        if self.tensorboard is not None:
            self.tensorboard.flush()
        return self.save()


def load_signal(path: str | Path) -> list[SignalStats]:
    """The snapshots of a ``signal.json`` written by :meth:`SignalDiagnostics.save` (or of its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / SIGNAL_JSON
    try:
        doc = json.loads(path.read_text())
        return [SignalStats.from_json_dict(d) for d in doc["snapshots"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a signal diagnostics file written by warmstart ({type(e).__name__}: {e})") from None


def _epoch(tag: str) -> int:
    """``"epoch 3"`` -> 3 (anything else sorts after every epoch)."""
    head, _, number = tag.partition(" ")
    return int(number) if head == "epoch" and number.isdigit() else 1 << 30


def _log_tensorboard(writer: Any, stats: SignalStats, step: int) -> None:
    edges = list(stats.bin_edges)
    width = edges[-1] - edges[-2]
    limits = edges + [edges[-1] + width]  # bucket i holds (limits[i-1], limits[i]]: below, the bins, above
    for layer in stats:
        for what, hist, mean, std in (("out", layer.out_hist, layer.out_mean, layer.out_std),
                                      ("act", layer.act_hist, layer.act_mean, layer.act_std)):
            n = sum(hist)
            if n == 0 or not (math.isfinite(mean) and math.isfinite(std)):
                continue
            writer.add_histogram_raw(f"signal/{what}/{layer.name}", min=edges[0], max=edges[-1], num=n, sum=mean * n,
                                     sum_squares=(std * std + mean * mean) * n, bucket_limits=limits,
                                     bucket_counts=list(hist), global_step=step)
        for key, value in (("out_std", layer.out_std), ("grad_out_std", layer.grad_out_std), ("pred_std", layer.pred_std)):
            if math.isfinite(value):
                writer.add_scalar(f"signal/{key}/{layer.name}", value, step)
