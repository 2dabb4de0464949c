"""Zero-cost scores of a random start: does the signal survive from the first layer to the last, at init?

A random init is a start too; before training, one forward + backward pass on one batch of training
images shows whether it lets the signal through. From the per-layer statistics of
:func:`~warmstart.init.signal.signal_stats` (std of every weight layer's output and of the gradient with
respect to it), with the last weight layer taken as the classifier:

- ``act_spread``  = ``|ln(std of the last hidden layer's output / std of the first's)|``;
- ``grad_spread`` = ``|ln(std of dLoss/d(first hidden output) / std of dLoss/d(last hidden output))|``;
- ``signal_spread`` = their sum: 0 when both keep their scale through the depth; each unit is a factor
  e ~ 2.7 of growth or decay. **Lower is better**; a spread that cannot be measured (a signal that
  vanished to exactly 0, or overflowed) is infinite.

In a plain ReLU net each layer multiplies the output variance by ``fan_in * Var(w) / 2`` (He et al. 2015,
eq. 10): x1 for He, x1/2 for Xavier, x1/6 for PyTorch's default, so over 29 hidden-to-hidden steps Xavier's
act spread is about 29/2 ln 2 ~ 10 and the default's ~ 26, while He, orthogonal (gain sqrt 2) and LSUV stay
near 0. These are the measures of signal-propagation papers (Schoenholz et al. 2017 "deep information
propagation"; Mishkin & Matas 2016), at one batch and no training: cheap, and blind to everything else
that decides how well a net trains.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from warmstart.init.signal import signal_stats

ZERO_COST_SCORES = ("signal_spread", "act_spread", "grad_spread")


def _spread(ratio: float) -> float:
    return abs(math.log(ratio)) if math.isfinite(ratio) and ratio > 0 else math.inf


def signal_spread(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, nonlinearity: str | None = "relu") -> dict[str, Any]:
    """The zero-cost scores of ``model`` as it is now, on the batch ``(x, y)`` (train mode, cross-entropy)."""
    st = signal_stats(model, x, y, nonlinearity=nonlinearity, tag="init")
    act, grad = st.act_std_ratio, st.grad_std_ratio
    a, g = _spread(act), _spread(grad)
    return {"act_std_ratio": act, "grad_std_ratio": grad, "act_spread": a, "grad_spread": g, "signal_spread": a + g,
            "layers": len(st.hidden), "stats": st}
