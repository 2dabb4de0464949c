"""Init specs: parsing (and its error messages), rule precedence, leaves only, warnings, seeding."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
from torch import nn

from warmstart.errors import UserError
from warmstart.init import InitSpec, apply_init, parse_init_spec
from warmstart.init.schemes import he_normal, normal, zeros
from warmstart.models import custom_3_layer


def small_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Module()
    model.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, groups=8))
    model.fc1 = nn.Linear(16, 12)
    model.fc2 = nn.Linear(12, 4)
    return model


@pytest.mark.parametrize("text, canonical", [
    ("he", "conv=he_normal,linear=he_normal,bn=ones,bias=zeros"),
    ("conv=he_normal, linear=xavier_uniform, bias=zeros", "conv=he_normal,linear=xavier_uniform,bias=zeros"),
    ("conv=kaiming_normal(fan_out),linear=glorot", "conv=he_normal(fan_out),linear=xavier_uniform"),
    ("conv=he_uniform(mode=fan_out, nonlinearity=leaky_relu, a=0.1)", "conv=he_uniform(fan_out, leaky_relu, 0.1)"),
    ("features.0.*=zeros,fc2.weight=normal(0.01)", "features.0.*=zeros,fc2.weight=normal(0.01)"),
    ("conv=orthogonal(1.414),linear=uniform(0.05),bias=constant(0.1)", "conv=orthogonal(1.414),linear=uniform(0.05),bias=constant(0.1)"),
    ("linear=xavier_normal(tanh),bn.bias=constant(-1)", "linear=xavier_normal(tanh),bn.bias=constant(-1)"),
    ("default", "conv=default,conv.bias=default,linear=default,linear.bias=default,bn=default,bn.bias=default"),
])
def test_parse_valid(text, canonical):
    spec = parse_init_spec(text)
    assert str(spec) == canonical
    assert parse_init_spec(str(spec)) == spec


def test_python_spec_equals_text_spec():
    spec = InitSpec([("conv", he_normal), ("fc2.weight", normal(0.01)), ("bias", "zeros")])
    assert spec == parse_init_spec("conv=he_normal,fc2.weight=normal(0.01),bias=zeros")
    assert spec + "fc1=zeros" == parse_init_spec("conv=he_normal,fc2.weight=normal(0.01),bias=zeros,fc1=zeros")
    assert InitSpec([("linear", zeros)]).rules[0].scheme.name == "zeros"


@pytest.mark.parametrize("text, message", [
    ("conv=he_nromal", r'"conv=he_nromal".*unknown init scheme "he_nromal" \(did you mean "he_normal"\?\)'),
    ("xavierr", r'did you mean "xavier"'),
    ("conv=he_normal(fan_mid)", r'"conv=he_normal\(fan_mid\)".*unknown he_normal mode "fan_mid" \(did you mean "fan_in"\?\)'),
    ("linear=xavier_uniform(tahn)", r'unknown nonlinearity "tahn" \(did you mean "tanh"\?\)'),
    ("conv=uniform", r'"conv=uniform": uniform\(eps\): missing a required argument: \'eps\''),
    ("conv=uniform(abc)", r"uniform: eps must be a number, got 'abc'"),
    ("conv=normal(-1)", r"normal: eps must be > 0"),
    ("conv=zeros(1)", r"zeros\(\).*too many positional arguments"),
    ("conv=he_normal(fan_out", r'unclosed "\(" in "conv=he_normal\(fan_out"'),
    ("conv=", r'"conv=": expected target=scheme'),
    ("=zeros", r'"=zeros": expected target=scheme'),
    ("conv=he,,bias=zeros", r"empty rule"),
    ("", r"empty init spec"),
    ("conv=he_normal 2", r"expected a scheme like"),
    ("conv=he_normal(leaky_relu)", r'unknown he_normal mode "leaky_relu"'),
])
def test_parse_invalid_names_the_bad_part(text, message):
    with pytest.raises(UserError, match=message):
        parse_init_spec(text)


def test_apply_time_errors_name_the_parameter():
    with pytest.raises(UserError, match=r'"fc3.weight=zeros" matches no parameter.*did you mean "fc[12].weight"'):
        apply_init(small_net(), "fc3.weight=zeros")
    with pytest.raises(UserError, match=r"he_normal needs a weight with a fan-in.*features\.1\.weight"):
        apply_init(small_net(), "bn=he_normal")
    model = small_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="dirac"):
        apply_init(model, "conv=zeros,linear=dirac")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # checked before anything changed


def test_type_rules_and_precedence():
    model = small_net()
    table = apply_init(model, "fc2.weight=constant(0.5),linear=he_normal,conv=xavier_normal,bias=zeros,conv.bias=constant(2)",
                       generator=0)
    assert torch.all(model.fc2.weight == 0.5)  # a glob wins over a later type rule
    assert table["fc1.weight"].scheme == "he_normal" and table["features.0.weight"].scheme == "xavier_normal"
    assert torch.all(model.features[0].bias == 2) and torch.all(model.features[3].bias == 2)  # later type rule wins
    assert not model.fc1.bias.any() and not model.features[1].bias.any()  # "bias" reaches linear and norm biases
    assert "features.1.weight" not in {r.param for r in table}  # no rule for the BN weight: untouched
    apply_init(model, "conv=zeros,conv=ones")
    assert torch.all(model.features[0].weight == 1)
    apply_init(model, "features.0.*=constant(3),fc2=constant(-1)")  # globs over parameter and module names
    assert torch.all(model.features[0].weight == 3) and torch.all(model.features[0].bias == 3)
    assert torch.all(model.fc2.weight == -1) and torch.all(model.fc2.bias == -1)


def test_table_reports_fans_eps_and_drawn_std():
    model = small_net()
    table = apply_init(model, "he", generator=0)
    assert [r.param for r in table] == [n for n, _ in model.named_parameters()]
    dw = table["features.3.weight"]  # grouped 8 -> 16, groups 8: weight (16, 1, 3, 3)
    assert (dw.type, dw.shape, dw.fan_in, dw.fan_out) == ("Conv2d", (16, 1, 3, 3), 9, 18)
    assert dw.eps == pytest.approx(math.sqrt(2 / 9))
    assert dw.std == pytest.approx(float(model.features[3].weight.detach().double().std(correction=0)))
    assert table["features.1.weight"].scheme == "ones" and table["features.1.weight"].fan_in is None
    rows = table.to_dicts()
    assert rows[0].keys() == {"param", "type", "shape", "scheme", "fan_in", "fan_out", "eps", "std"}
    lines = table.to_text().splitlines()
    assert len(lines) == len(table) + 1 and lines[0].split() == ["param", "type", "shape", "scheme", "M", "N", "eps", "std"]
    assert len({re.match(r"\S+\s+", line).end() for line in lines}) == 1  # columns aligned
    assert lines[5].split()[:6] == ["features.3.weight", "Conv2d", "16x1x3x3", "he_normal", "9", "18"]


def test_he_shorthand_resets_norm_layers_and_their_statistics():
    model = small_net()
    bn = model.features[1]
    with torch.no_grad():
        bn.weight.fill_(5), bn.bias.fill_(2), bn.running_mean.fill_(3), bn.running_var.fill_(9)
    apply_init(model, "he", generator=0)
    assert torch.all(bn.weight == 1) and not bn.bias.any()
    assert not bn.running_mean.any() and torch.all(bn.running_var == 1)


def test_leaf_modules_only():
    calls = []

    class Block(nn.Module):  # a container with its own parameter and reset_parameters
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.full((4,), 7.0))
            self.fc = nn.Linear(4, 4)

        def reset_parameters(self):
            calls.append("block")

    model = nn.Sequential(Block(), nn.ReLU(), nn.Linear(4, 2))
    table = apply_init(model, "default", generator=0)
    assert calls == []
    assert [r.param for r in table] == ["0.fc.weight", "0.fc.bias", "2.weight", "2.bias"]
    apply_init(model, "*=zeros")
    assert torch.all(model[0].scale == 7)  # held by a container: never visited
    assert not model[0].fc.weight.any()


def test_pretrained_model_warns_once_in_one_line():
    model = small_net()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_init(model, "he", generator=0)  # not pretrained: silent
    model.warmstart_pretrained = True
    with pytest.warns(UserWarning, match="pretrained") as record:
        apply_init(model, "fc2=zeros")
    assert len(record) == 1 and "\n" not in str(record[0].message) and "fc2.weight" in str(record[0].message)


def test_seeded_init_is_reproducible():
    def init(generator, spec="conv=he_uniform,linear=xavier_normal,bn=default,bn.bias=default,fc2=default"):
        torch.manual_seed(123)  # the global RNG must not matter
        model = small_net()
        torch.randn(5)
        apply_init(model, spec, generator=generator)
        return model.state_dict()

    a, b = init(0), init(0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = init(torch.Generator().manual_seed(0))
    assert all(torch.equal(a[k], c[k]) for k in a)
    d = init(1)
    assert not torch.equal(a["features.0.weight"], d["features.0.weight"])
    assert not torch.equal(a["fc2.weight"], d["fc2.weight"])  # the default scheme follows the seed too
    model = small_net()
    rng = torch.get_rng_state()
    apply_init(model, "default", generator=0)
    assert torch.equal(rng, torch.get_rng_state())  # a seeded init leaves the global RNG alone
    with pytest.raises(UserError, match="generator must be"):
        apply_init(small_net(), "he", generator="0")


def test_works_on_the_lecture_model():
    model = custom_3_layer()
    table = apply_init(model, "he", generator=0)
    assert len(table) == 10
    assert (table["fc1.weight"].fan_in, table["fc1.weight"].fan_out) == (1600, 64)
