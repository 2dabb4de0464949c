"""Signal propagation: how activations and gradients change in scale from layer to layer.

Why the initial weight scale matters: in a plain ReLU net each layer multiplies the variance of the
signal by ``fan_in * Var(w) / 2`` (He et al. 2015, eq. 10), so unless that factor is 1 the forward signal
and the backward gradient shrink or grow geometrically with depth (He et al. fig. 3; Glorot & Bengio
2010, fig. 6-7). This module *measures* that on any model and puts the theory's prediction next to it.

Measurement works on any ``nn.Module`` through hooks on its ``Linear``/``Conv1d``/``Conv2d``/``Conv3d``
leaf layers ("weight layers"), listed in the order they first run. Per layer:

* ``out_*``: the layer's **output** (pre-activation) -- mean, std and fraction of entries with
  ``|x| < zero_tol`` (default ``1e-6``). This is the quantity the variance prediction is about, and the
  one the summary ratios use.
* ``act_*``: the **post-nonlinearity** value, reported when an activation module (``nn.ReLU``, ``nn.Tanh``,
  ``nn.Hardswish``, ...) is applied to the layer's output, directly or through one normalisation layer
  (``BatchNorm``/``LayerNorm``/``GroupNorm``); ``act`` names the chain, e.g. ``"ReLU"`` or
  ``"BatchNorm2d>Hardswish"``. Functional activations (``F.relu`` inside ``forward``) cannot be seen; such
  layers have ``act=None`` and NaN ``act_*``.
* ``grad_out_std``: std of dLoss/d(layer output); ``grad_weight_std``: std of dLoss/d(weight).
* ``pred_var``: the variance of the layer output predicted by the theory, chained from the model input
  through every layer (:func:`predicted_variances`) -- the curve of He et al. fig. 3 / Glorot & Bengio;
  ``pred_var_local``: the same law applied to this layer alone, from the measured mean square of its
  actual input, ``in_msq`` (He et al. eq. 7). At finite width the chained prediction drifts from one
  network to the next (a random walk of relative size ~ sqrt(depth / width)); the local one holds per
  layer.
* histograms of the output and of the post-nonlinearity value over fixed bin edges.

All statistics pool every entry of the tensor (batch, units/channels and positions together).
:func:`signal_stats` takes one forward + backward at a given state (e.g. at init);
:class:`SignalRecorder` accumulates the same statistics over the batches of a training run and
snapshots them with :meth:`SignalRecorder.record` (e.g. once per epoch).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from warmstart.errors import UserError, unknown
from warmstart.init.schemes import NORM_TYPES
from warmstart.init.signal_stats import ZERO_TOL, LayerStats, SignalStats  # noqa: F401  (LayerStats re-exported)

WEIGHT_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign,
)  # fmt: skip
DEFAULT_BIN_EDGES: tuple[float, ...] = tuple(round(-4.0 + 0.1 * i, 10) for i in range(81))
"""80 histogram bins of width 0.1 over [-4, 4]; values outside are counted in the under/over slots."""
NONLINEARITY_GAIN = {"relu": 0.5, "linear": 1.0}
"""E[x^2] of a layer's input as a fraction of Var(previous layer output): 1/2 after a ReLU, 1 for a
linear (or tanh in its linear regime, Glorot & Bengio's assumption) activation."""


# --------------------------------------------------------------------------------------------- helpers
def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``Linear``/``Conv{1,2,3}d`` modules of ``model`` with their names, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYER_TYPES)]


def fan_in(layer: nn.Module) -> int:
    """Inputs feeding one output unit: ``in_features`` or ``in_channels / groups * prod(kernel_size)``."""
    if isinstance(layer, nn.Linear):
        return int(layer.in_features)
    return int(layer.weight[0].numel())  # conv weight is (out, in/groups, *kernel)


def save_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """Every submodule's ``training`` flag, so a mixed train/eval state can be restored exactly."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    for m, training in modes.items():
        m.training = training


class _Moments:
    """Running count / mean / M2 / near-zero count over tensors, kept on their device (no host sync).

    Each batch is reduced with the two-pass formula (mean, then the sum of squared deviations in float64:
    accurate when the mean is large compared with the spread, as for sigmoid outputs, and no overflow for
    exploding activations), and batches are merged with Chan et al.'s parallel update.
    """

    def __init__(self, zero_tol: float | None) -> None:
        self.zero_tol = zero_tol  # None: do not count near-zero entries (saves three passes)
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self.zeros: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        n = x.numel()
        if n == 0:
            return
        x = x.float()
        mean32 = x.mean()
        m2 = torch.linalg.vector_norm(x - mean32, dtype=torch.float64).square()
        mean = mean32.double()  # (torch.var_mean is an order of magnitude slower on CPU)
        zeros = (x.abs() < self.zero_tol).sum() if self.zero_tol is not None else mean.new_zeros(())
        if self.n == 0:
            self.mean, self.m2, self.zeros = mean, m2, zeros
        else:
            assert self.mean is not None and self.m2 is not None and self.zeros is not None
            total = self.n + n
            delta = mean.to(self.mean.device) - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2.to(self.m2.device) + delta * delta * (self.n * n / total)
            self.zeros = self.zeros + zeros.to(self.zeros.device)
        self.n += n

    def result(self) -> tuple[float, float, float]:
        """(mean, std, near-zero fraction); NaN when nothing was seen."""
        if self.n == 0:
            return math.nan, math.nan, math.nan
        assert self.mean is not None and self.m2 is not None and self.zeros is not None
        zero_frac = float(self.zeros) / self.n if self.zero_tol is not None else math.nan
        return float(self.mean), math.sqrt(max(float(self.m2) / self.n, 0.0)), zero_frac

    def second_moment(self) -> float:
        mean, std, _ = self.result()
        return mean * mean + std * std


def _std(x: torch.Tensor) -> float:
    moments = _Moments(None)
    moments.add(x)
    return moments.result()[1]


class _Histogram:
    """Counts over fixed bin edges ``[e_i, e_{i+1})``, plus one slot below and one above: ``nbins + 2``.

    Evenly spaced edges (the default) are binned arithmetically (up to float rounding at an edge; ~10x
    faster than a binary search), others with ``torch.bucketize``. NaN counts as above.
    """

    def __init__(self, edges: torch.Tensor) -> None:
        self.edges = edges
        self.counts: torch.Tensor | None = None
        widths = edges[1:] - edges[:-1]
        self.uniform = bool(torch.allclose(widths, widths[0].expand_as(widths), rtol=1e-5, atol=0.0))
        self.lo, self.inv_width, self.nbins = float(edges[0]), float(1.0 / widths.mean()), len(edges) - 1

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float().flatten()
        if self.uniform:
            pos = (x - self.lo).mul_(self.inv_width).floor_().clamp_(-1, self.nbins)
            idx = pos.nan_to_num_(nan=float(self.nbins)).to(torch.long).add_(1)
        else:
            if self.edges.device != x.device:
                self.edges = self.edges.to(x.device)
            idx = torch.bucketize(x, self.edges, right=True)  # 0 = below, len(edges) = at/above the last edge
        counts = torch.bincount(idx, minlength=self.nbins + 2)
        self.counts = counts if self.counts is None else self.counts + counts.to(self.counts.device)

    def result(self) -> list[int]:
        if self.counts is None:
            return [0] * (self.nbins + 2)
        return [int(c) for c in self.counts.cpu()]


# --------------------------------------------------------------------------------------------- theory
def _mean_squares(layer: nn.Module) -> tuple[float, float]:
    """(E[w^2], E[b^2]) of a weight layer; E[b^2] = 0 without bias."""
    with torch.no_grad():
        w2 = float(torch.linalg.vector_norm(layer.weight.detach(), dtype=torch.float64) ** 2) / layer.weight.numel()
        b = layer.bias
        b2 = float(torch.linalg.vector_norm(b.detach(), dtype=torch.float64) ** 2) / b.numel() if b is not None else 0.0
    return w2, b2


def _layer_law(layer: nn.Module, input_msq: float) -> float:
    """``Var(out) = fan_in * E[w^2] * E[x^2] + E[b^2]`` for one layer (He et al. 2015, eq. 7 + bias)."""
    w2, b2 = _mean_squares(layer)
    return fan_in(layer) * w2 * input_msq + b2


def predicted_variances(
    model: nn.Module, input_var: float = 1.0, nonlinearity: str = "relu"
) -> dict[str, float]:
    """Predicted output variance of every weight layer, chained front to back (registration order).

    For a layer with fan-in ``M``, weights of variance ``s^2`` and bias ``b``::

        Var(out) = M * s^2 * E[x^2] + E[b^2]        (He et al. 2015, eq. 7, plus the bias term)

    with ``E[x^2] = input_var`` for the first layer and ``E[x^2] = gain * Var(previous output)`` after,
    ``gain = 1/2`` for ``"relu"`` and ``1`` for ``"linear"`` (tanh near 0). So a ReLU layer multiplies the
    variance by ``M*s^2/2``: x1 for He (``s^2 = 2/M``), x1/2 for Xavier with equal fans
    (``s^2 = 2/(M+N)``), x1/6 for PyTorch's default Linear/Conv init (``s^2 = 1/(3M)``; its default bias,
    of variance ``1/(3M)``, then sets a floor the signal cannot vanish below).

    ``s^2`` and ``E[b^2]`` are the layers' actual mean squared weight and bias. Assumptions: weights
    zero-mean and independent of the inputs, a zero-mean input, every layer's input is the previous weight
    layer's output passed through the nonlinearity (a plain net: no normalisation, residual, pooling, or
    zero padding -- a padded conv border sees fewer inputs and runs slightly below the prediction).
    """
    key = str(nonlinearity).strip().lower()
    if key not in NONLINEARITY_GAIN:
        raise unknown("nonlinearity", str(nonlinearity), NONLINEARITY_GAIN)
    if not (input_var >= 0 and math.isfinite(input_var)):
        raise UserError(f"predicted_variances: input_var must be a finite number >= 0, got {input_var!r}")
    gain = NONLINEARITY_GAIN[key]
    out: dict[str, float] = {}
    second_moment = float(input_var)
    for name, layer in weight_layers(model):
        var = _layer_law(layer, second_moment)
        out[name] = var
        second_moment = gain * var
    return out


# --------------------------------------------------------------------------------------------- recording
@dataclass
class _LayerAcc:
    inp: _Moments
    out: _Moments
    act: _Moments
    grad_out: _Moments
    grad_w: _Moments
    out_hist: _Histogram
    act_hist: _Histogram
    act_kind: str | None = None


class SignalRecorder:
    """Accumulates per-layer signal statistics over every forward/backward while attached.

    Use it around a training loop and call :meth:`record` once per epoch::

        rec = SignalRecorder(model).attach()
        for epoch in range(epochs):
            train_one_epoch(model, ...)          # forwards and backwards are observed
            rec.record(f"epoch{epoch}").save_csv(run_dir / f"signal-{epoch}.csv")
        rec.detach()

    Statistics pool all batches since the previous :meth:`record` (or :meth:`reset`). Forwards under
    ``torch.no_grad`` (validation) still count towards the activation statistics unless wrapped in
    :meth:`paused`. Weight-gradient hooks are placed on weights that require grad when :meth:`attach`
    runs. Accumulators live on the model's device; only :meth:`record` synchronises.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
        zero_tol: float = ZERO_TOL,
        nonlinearity: str | None = "relu",
    ) -> None:
        edges = [float(e) for e in bin_edges]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise UserError(f"signal recorder: bin_edges must be >= 2 increasing numbers, got {edges[:5]}...")
        if not zero_tol > 0:
            raise UserError(f"signal recorder: zero_tol must be > 0, got {zero_tol!r}")
        if nonlinearity is not None and str(nonlinearity).strip().lower() not in NONLINEARITY_GAIN:
            raise unknown("nonlinearity", str(nonlinearity), NONLINEARITY_GAIN)
        self.model = model
        self.bin_edges = edges
        self.zero_tol = float(zero_tol)
        self.nonlinearity = nonlinearity
        self.history: list[SignalStats] = []
        self._edges = torch.tensor(edges, dtype=torch.float32)
        self._handles: list[Any] = []
        self._paused = False
        self.reset()

    # -- lifecycle
    def attach(self) -> "SignalRecorder":
        """Place the hooks (idempotent). Returns ``self``."""
        if self._handles:
            return self
        layers = weight_layers(self.model)
        if not layers:
            raise UserError(
                f"signal recorder: {type(self.model).__name__} has no Linear/Conv layer to observe"
            )
        h = self._handles
        h.append(self.model.register_forward_pre_hook(self._on_model_input))
        h.append(self.model.register_forward_hook(self._on_model_output))
        for name, layer in layers:
            h.append(layer.register_forward_hook(partial(self._on_layer, name)))
            if layer.weight.requires_grad:
                h.append(layer.weight.register_hook(partial(self._on_weight_grad, name)))
        for m in self.model.modules():
            if isinstance(m, ACTIVATION_TYPES):
                h.append(m.register_forward_hook(self._on_activation))
            elif isinstance(m, NORM_TYPES):
                h.append(m.register_forward_hook(self._on_norm))
        return self

    def detach(self) -> None:
        """Remove every hook this recorder placed (other hooks on the model are left alone)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._last = None

    def __enter__(self) -> "SignalRecorder":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def reset(self) -> None:
        """Forget what was accumulated since the last :meth:`record`."""
        self._acc: dict[str, _LayerAcc] = {}
        self._input = _Moments(None)
        self._last: tuple[str, torch.Tensor, str] | None = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Context manager: forwards/backwards inside it are not recorded (e.g. validation)."""
        was, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was

    # -- hooks
    def _layer_acc(self, name: str) -> _LayerAcc:
        acc = self._acc.get(name)
        if acc is None:
            z = self.zero_tol
            acc = _LayerAcc(
                _Moments(None), _Moments(z), _Moments(z), _Moments(None), _Moments(None),
                _Histogram(self._edges), _Histogram(self._edges),
            )  # fmt: skip
            self._acc[name] = acc  # dict order = order of first execution
        return acc

    def _on_model_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._paused and args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
            self._input.add(args[0])

    def _on_model_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self._last = None  # do not keep the last layer's output (and its graph) alive between steps

    def _on_layer(self, name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._paused or not isinstance(output, torch.Tensor):
            return
        acc = self._layer_acc(name)
        if args and isinstance(args[0], torch.Tensor):
            acc.inp.add(args[0])
        acc.out.add(output)
        acc.out_hist.add(output)
        self._last = (name, output, "")
        if output.requires_grad:
            # A tensor hook sees dLoss/d(output) even if an in-place activation later modifies `output`.
            output.register_hook(partial(self._on_output_grad, name))

    def _on_norm(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        last, self._last = self._last, None
        if last is not None and args and args[0] is last[1] and isinstance(output, torch.Tensor) and not last[2]:
            self._last = (last[0], output, type(module).__name__ + ">")

    def _on_activation(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        last, self._last = self._last, None
        if self._paused or last is None or not args or args[0] is not last[1]:
            return
        if isinstance(output, torch.Tensor):
            acc = self._layer_acc(last[0])
            acc.act.add(output)
            acc.act_hist.add(output)
            acc.act_kind = last[2] + type(module).__name__

    def _on_output_grad(self, name: str, grad: torch.Tensor) -> None:
        if not self._paused:
            self._layer_acc(name).grad_out.add(grad)

    def _on_weight_grad(self, name: str, grad: torch.Tensor) -> None:
        if not self._paused:
            self._layer_acc(name).grad_w.add(grad)

    # -- snapshots
    def record(self, tag: str = "") -> SignalStats:
        """Snapshot everything accumulated since the last record, append it to :attr:`history`, reset."""
        modules = dict(weight_layers(self.model))
        input_var = self._input.second_moment() if self._input.n else math.nan
        preds: dict[str, float] = {}
        if self.nonlinearity is not None:
            preds = predicted_variances(
                self.model, 1.0 if math.isnan(input_var) else input_var, self.nonlinearity
            )
        layers = []
        for i, (name, acc) in enumerate(self._acc.items()):
            module = modules[name]
            out_mean, out_std, out_zero = acc.out.result()
            act_mean, act_std, act_zero = acc.act.result()
            in_msq = acc.inp.second_moment() if acc.inp.n else math.nan
            layers.append(
                LayerStats(
                    index=i,
                    name=name,
                    kind=type(module).__name__,
                    fan_in=fan_in(module),
                    weight_std=_std(module.weight),
                    count=acc.out.n,
                    in_msq=in_msq,
                    out_mean=out_mean,
                    out_std=out_std,
                    out_zero_frac=out_zero,
                    pred_var=preds.get(name, math.nan),
                    pred_var_local=_layer_law(module, in_msq),
                    act=acc.act_kind,
                    act_mean=act_mean,
                    act_std=act_std,
                    act_zero_frac=act_zero,
                    grad_out_std=acc.grad_out.result()[1],
                    grad_weight_std=acc.grad_w.result()[1],
                    out_hist=acc.out_hist.result(),
                    act_hist=acc.act_hist.result(),
                )
            )
        stats = SignalStats(layers, list(self.bin_edges), str(tag), self.zero_tol, input_var)
        self.history.append(stats)
        self.reset()
        return stats


def signal_stats(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    *,
    train: bool = True,
    nonlinearity: str | None = "relu",
    bin_edges: Sequence[float] = DEFAULT_BIN_EDGES,
    zero_tol: float = ZERO_TOL,
    tag: str = "",
) -> SignalStats:
    """Signal statistics of one forward + backward of ``loss_fn(model(x), y)``.

    The model runs in train mode (``train=True``, what the first optimisation step sees: BatchNorm uses
    batch statistics) or eval mode; every submodule's mode is restored afterwards, the hooks are removed,
    and the model's ``.grad`` fields are not touched (gradients are taken with ``torch.autograd.grad``,
    so they stay ``None``/zero if they were). ``pred_var`` is chained from ``E[x^2]`` of this input with
    the given ``nonlinearity`` (``"relu"``, ``"linear"``, or ``None`` for no prediction).
    """
    if not isinstance(x, torch.Tensor) or x.numel() == 0:
        raise UserError("signal_stats: x must be a non-empty tensor batch")
    modes = save_modes(model)
    recorder = SignalRecorder(model, bin_edges=bin_edges, zero_tol=zero_tol, nonlinearity=nonlinearity)
    try:
        model.train(train)
        with recorder, torch.enable_grad():
            x_in = x.detach().requires_grad_(True) if x.is_floating_point() else x
            loss = loss_fn(model(x_in), y)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise UserError("signal_stats: loss_fn(model(x), y) must return a scalar tensor")
            wrt = [x_in] if x_in.requires_grad else []
            wrt += [m.weight for _, m in weight_layers(model) if m.weight.requires_grad]
            if loss.requires_grad and wrt:
                torch.autograd.grad(loss, wrt, allow_unused=True)
        return recorder.record(tag)
    finally:
        restore_modes(modes)
