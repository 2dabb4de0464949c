"""Schemes against the lecture's formulas, measured on large layers; fans of grouped convolutions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from warmstart.errors import UserError
from warmstart.init import apply_init, fans, gain
from warmstart.init.schemes import SCHEMES

LINEAR = nn.Linear(2000, 2000)  # M = N = 2000
CONV = nn.Conv2d(256, 128, 3)  # M = 256*9 = 2304, N = 128*9 = 1152


# scheme text -> the std it must target, from (M, N)
FORMULAS = {
    "he_normal": lambda m, n: math.sqrt(2 / m),
    "he_uniform": lambda m, n: math.sqrt(2 / m),
    "kaiming_normal(fan_out)": lambda m, n: math.sqrt(2 / n),
    "kaiming_uniform(fan_out)": lambda m, n: math.sqrt(2 / n),
    "he_normal(fan_in, leaky_relu, 0.2)": lambda m, n: math.sqrt(2 / (1 + 0.2**2)) / math.sqrt(m),
    "xavier_normal": lambda m, n: math.sqrt(2 / (m + n)),
    "glorot_uniform": lambda m, n: math.sqrt(2 / (m + n)),
    "xavier_uniform(tanh)": lambda m, n: 5 / 3 * math.sqrt(2 / (m + n)),
    "lecun_normal": lambda m, n: 1 / math.sqrt(m),
    "lecun_uniform": lambda m, n: 1 / math.sqrt(m),
    "normal(0.02)": lambda m, n: 0.02,
    "uniform(0.05)": lambda m, n: 0.05 / math.sqrt(3),
    "orthogonal(2)": lambda m, n: None,  # depends on the matrix's shape: see _expected
}


def _expected(scheme: str, weight: torch.Tensor, m: int, n: int) -> float:
    if scheme.startswith("orthogonal"):  # rows or columns orthonormal, times gain 2
        rows = weight.shape[0]
        return 2 / math.sqrt(max(rows, weight.numel() // rows))
    return FORMULAS[scheme](m, n)


@pytest.mark.parametrize("layer", [LINEAR, CONV], ids=["linear2000", "conv256"])
@pytest.mark.parametrize("scheme", list(FORMULAS))
def test_measured_std_matches_formula(layer, scheme):
    (row,) = apply_init(layer, f"weight={scheme}", generator=0).rows
    m = layer.weight.shape[1] * math.prod(layer.weight.shape[2:])
    n = layer.weight.shape[0] * math.prod(layer.weight.shape[2:])
    assert (row.fan_in, row.fan_out) == (m, n)
    expected = _expected(scheme, layer.weight, m, n)
    assert row.eps == pytest.approx(expected, rel=1e-9)
    w = layer.weight.detach().double()
    assert row.std == pytest.approx(float(w.std(correction=0)))
    assert float(w.std()) == pytest.approx(expected, rel=0.03)
    assert abs(float(w.mean())) < 0.03 * expected
    if "uniform" in scheme:  # U[-b, b] with b = sqrt(3) * std: the extremes reach b and never pass it
        bound = math.sqrt(3) * expected
        assert bound * 0.999 < float(w.abs().max()) <= bound * (1 + 1e-6)
    if scheme.startswith("orthogonal") and w.dim() == 2:
        assert torch.allclose(w @ w.T, 4 * torch.eye(w.shape[0], dtype=w.dtype), atol=1e-4)


def test_depthwise_conv_fans_are_the_kernel_size():
    conv = nn.Conv2d(1024, 1024, 5, groups=1024)
    assert fans(conv.weight, conv) == (25, 25)
    # PyTorch over-counts fan_out by groups (pytorch issue 23854); we must not
    assert nn.init._calculate_fan_in_and_fan_out(conv.weight) == (25, 25 * 1024)
    table = apply_init(conv, "weight=xavier_normal", generator=1)
    assert table["weight"].eps == pytest.approx(math.sqrt(2 / 50))
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / 50), rel=0.03)
    apply_init(conv, "weight=he_normal(fan_out)", generator=1)
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / 25), rel=0.03)


def test_grouped_conv_fans():
    conv = nn.Conv2d(256, 512, 3, groups=8)  # weight (512, 32, 3, 3)
    m, n = 32 * 9, 512 // 8 * 9
    assert fans(conv.weight, conv) == (m, n)
    assert nn.init._calculate_fan_in_and_fan_out(conv.weight) == (m, 8 * n)
    table = apply_init(conv, "weight=xavier_normal", generator=2)
    assert (table["weight"].fan_in, table["weight"].fan_out) == (m, n)
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (m + n)), rel=0.03)


def test_gain_names_and_numbers():
    assert gain("relu") == pytest.approx(math.sqrt(2))
    assert gain("tanh") == pytest.approx(5 / 3)
    assert gain(0.5) == 0.5
    with pytest.raises(UserError, match='did you mean "tanh"'):
        gain("tahn")


def test_constant_zeros_ones():
    lin = nn.Linear(30, 20)
    table = apply_init(lin, "weight=constant(0.1),bias=ones")
    assert torch.all(lin.weight == 0.1) and torch.all(lin.bias == 1)
    assert table["weight"].eps == 0 and table["weight"].std == pytest.approx(0, abs=1e-12)
    apply_init(lin, "zeros")
    assert not lin.weight.any() and not lin.bias.any()


def test_dirac_is_the_identity_per_group():
    x = torch.randn(2, 8, 9, 9)
    for groups in (1, 4):
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        apply_init(conv, "conv=dirac,bias=zeros")
        assert torch.allclose(conv(x), x)
    with pytest.raises(UserError, match="convolution weights only"):
        apply_init(nn.Linear(4, 4), "linear=dirac")


def test_shared_kernel_copies_one_kernel_everywhere():
    conv = nn.Conv2d(16, 32, 3)
    table = apply_init(conv, "conv=shared_kernel", generator=0)
    w = conv.weight.detach()
    assert torch.equal(w, w[0, 0].expand_as(w)) and w[0, 0].std() > 0
    assert table["weight"].eps == pytest.approx(math.sqrt(2 / 9) / 16)
    other = nn.Conv2d(16, 32, 3)
    apply_init(other, "conv=shared_kernel", generator=1)
    assert not torch.equal(other.weight, conv.weight)  # drawn per layer, not a fixed constant
    lin = nn.Linear(1600, 64)
    apply_init(lin, "linear=shared_kernel")
    assert torch.all(lin.weight == math.sqrt(2) / 1600)


def test_default_is_the_modules_own_reset_parameters():
    lin = nn.Linear(2000, 2000)
    with torch.no_grad():
        lin.weight.zero_(), lin.bias.fill_(7)
    table = apply_init(lin, "default", generator=0)
    eps = 1 / math.sqrt(3 * 2000)  # PyTorch's U[-1/sqrt(M), 1/sqrt(M)]
    assert table["weight"].eps == pytest.approx(eps)
    assert float(lin.weight.detach().std()) == pytest.approx(eps, rel=0.03)
    assert float(lin.weight.detach().abs().max()) <= 1 / math.sqrt(2000)
    assert float(lin.bias.detach().abs().max()) <= 1 / math.sqrt(2000)

    # conv=default resets only the weight: the bias (no rule) keeps its value
    conv = nn.Conv2d(4, 8, 3)
    with torch.no_grad():
        conv.bias.fill_(3)
    apply_init(conv, "conv=default", generator=0)
    assert torch.all(conv.bias == 3)

    class Scale(nn.Module):  # a leaf without reset_parameters
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3, 3))

    with pytest.raises(UserError, match="has no reset_parameters"):
        apply_init(nn.Sequential(Scale()), "0.weight=default")


def test_fan_schemes_refuse_1d_parameters():
    model = nn.Module()
    model.fc = nn.Linear(3, 4)
    with pytest.raises(UserError, match=r"fc\.bias.*shape \(4,\)"):
        apply_init(model, "fc.*=he_normal")


def test_every_registered_name_builds():
    for name, factory in SCHEMES.items():
        args = {"constant": (0.5,), "uniform": (0.1,), "normal": (0.1,)}.get(name, ())
        assert factory(*args).name
