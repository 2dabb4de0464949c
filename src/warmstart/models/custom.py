"""The lecture's small CIFAR-10 network, and the init specs of its symmetry experiment.

``custom_3_layer``: input 3x32x32 -> conv1 (32 3x3, pad 1) -> ReLU -> maxpool 2 -> conv2 (64 3x3) ->
ReLU -> maxpool 2 -> conv3 (64 3x3) -> ReLU -> flatten (64*5*5 = 1600) -> fc1 (64) -> ReLU -> fc2.

The experiment's arms, as specs for :func:`warmstart.init.apply_init`:

- :data:`LECTURE_CONSTANT`: every conv layer starts with one 3x3 kernel copied into every (out, in)
  slot (``shared_kernel``), every conv bias is 1, linear layers keep PyTorch's default. conv1 and
  conv2 can never tell their filters apart; conv3's filters are separated by fc1's random weights,
  but each one is still the same kernel in every input slot, so conv3's weight has rank <= 9.
- :data:`LECTURE_CONSTANT_LINEAR`: fc1 is constant too (every weight sqrt(2)/1600), so nothing
  separates conv3's filters either.
- :data:`LECTURE_RANDOM`: He-normal conv weights, zero conv biases; linear layers default.
"""

from __future__ import annotations

from torch import Tensor, nn

from warmstart.errors import UserError

LECTURE_CONSTANT = "conv=shared_kernel,conv.bias=constant(1)"
LECTURE_CONSTANT_LINEAR = LECTURE_CONSTANT + ",fc1.weight=shared_kernel"
LECTURE_RANDOM = "conv=he_normal,conv.bias=zeros"


class Custom3Layer(nn.Module):
    """Three 3x3 conv layers and two linear layers, for 32x32 inputs; no dropout, no norm layers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.fc1 = nn.Linear(64 * 5 * 5, 64)
        self.fc2 = nn.Linear(64, num_classes)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def warmstart_stages(self) -> list:
        """forward() as a sequence of submodule names and inline modules (for the feature cache)."""
        return ["conv1", nn.ReLU(), nn.MaxPool2d(2), "conv2", nn.ReLU(), nn.MaxPool2d(2), "conv3", nn.ReLU(),
                nn.Flatten(1), "fc1", nn.ReLU(), "fc2"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.conv3(x))
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


def custom_3_layer(num_classes: int = 10, in_channels: int = 3) -> Custom3Layer:
    """The lecture's 3-conv-layer network for 3x32x32 (``in_channels`` x 32 x 32) images."""
    for arg, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"custom_3_layer: {arg} must be a positive integer, got {value!r}")
    return Custom3Layer(num_classes, in_channels)
