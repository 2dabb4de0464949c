"""Plain deep nets: weight layers and a nonlinearity, nothing else.

No BatchNorm, no residual connections, no dropout: the only thing that keeps the signal alive through
depth is the scale of the initial weights, which is exactly what these nets are for (He et al. 2015,
fig. 3; Glorot & Bengio 2010, fig. 6-7). They are built with PyTorch's default initialisation; apply an
init scheme afterwards.

Module names are fixed so that layer-wise reports read the same for every depth:

* ``layers.0`` ... ``layers.{depth-1}``: the hidden weight layers (``nn.Linear`` or 3x3 ``nn.Conv2d``),
* ``acts.0`` ... ``acts.{depth-1}``: one activation module per hidden layer, applied right after it,
* ``head``: the final ``nn.Linear`` producing the logits (for the CNN after a global average pool).
"""

from __future__ import annotations

import torch
from torch import nn

from warmstart.errors import UserError, unknown

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def _activation_name(name: str) -> str:
    """The canonical (lower-case) activation name, or a UserError with a did-you-mean."""
    key = str(name).strip().lower()
    if key not in ACTIVATIONS:
        raise unknown("activation", str(name), ACTIVATIONS)
    return key


def _positive(what: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"plain net: {what} must be an integer >= {minimum}, got {value!r}")
    return value


class PlainNet(nn.Module):
    """``x -> act(layers.0) -> ... -> act(layers.{d-1}) -> [global average pool] -> head``.

    ``kind`` is ``"mlp"`` (inputs are flattened to ``(N, features)``) or ``"cnn"`` (inputs ``(N, C, H, W)``,
    spatial size kept by every 3x3/pad-1 convolution, then averaged over H and W before the head).
    """

    def __init__(self, layers: list[nn.Module], activation: str, head: nn.Linear, kind: str) -> None:
        super().__init__()
        activation = _activation_name(activation)
        self.kind = kind
        self.activation = activation
        self.layers = nn.ModuleList(layers)
        self.acts = nn.ModuleList(ACTIVATIONS[activation]() for _ in layers)
        self.head = head

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "mlp":
            x = x.flatten(1)
        for layer, act in zip(self.layers, self.acts):
            x = act(layer(x))
        if self.kind == "cnn":
            x = x.mean(dim=(2, 3))
        return self.head(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, depth={self.depth}, activation={self.activation!r}"


def plain_mlp(
    depth: int, width: int, in_features: int, num_classes: int, activation: str = "relu", *, bias: bool = True
) -> PlainNet:
    """A multilayer perceptron with ``depth`` hidden ``Linear(width)`` layers and a linear ``head``."""
    depth, width = _positive("depth", depth, 0), _positive("width", width)
    in_features, num_classes = _positive("in_features", in_features), _positive("num_classes", num_classes)
    activation = _activation_name(activation)
    sizes = [in_features] + [width] * depth
    layers = [nn.Linear(sizes[i], sizes[i + 1], bias=bias) for i in range(depth)]
    return PlainNet(layers, activation, nn.Linear(sizes[-1], num_classes, bias=bias), "mlp")


def plain_cnn(
    depth: int, width: int, in_channels: int, num_classes: int, activation: str = "relu", *, bias: bool = True
) -> PlainNet:
    """A stack of ``depth`` 3x3 convolutions (padding 1, ``width`` channels), global average pool, linear ``head``."""
    depth, width = _positive("depth", depth, 0), _positive("width", width)
    in_channels, num_classes = _positive("in_channels", in_channels), _positive("num_classes", num_classes)
    activation = _activation_name(activation)
    chans = [in_channels] + [width] * depth
    layers = [nn.Conv2d(chans[i], chans[i + 1], kernel_size=3, padding=1, bias=bias) for i in range(depth)]
    return PlainNet(layers, activation, nn.Linear(chans[-1], num_classes, bias=bias), "cnn")
