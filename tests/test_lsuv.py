"""LSUV on real data (scikit-learn's bundled digits): unit variance per layer, modes, determinism, warnings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from warmstart.errors import UserError
from warmstart.init.lsuv import LSUVLayer, LSUVWarning, lsuv_init
from warmstart.init.signal import signal_stats, weight_layers
from warmstart.models.plain import plain_cnn, plain_mlp


pytestmark = pytest.mark.usefixtures("single_thread")



def output_variances(model: nn.Module, batch: torch.Tensor) -> dict[str, float]:
    """Measured independently of lsuv_init: the variance of every weight layer's output on ``batch``."""
    seen: dict[str, float] = {}
    handles = [
        m.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, float(out.var(correction=0))))
        for n, m in weight_layers(model)
    ]
    with torch.no_grad():
        model.eval()(batch)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize(
    ("make", "shape"),
    [(lambda: plain_mlp(12, 64, 64, 10), (-1, 64)), (lambda: plain_cnn(6, 16, 1, 10), (-1, 1, 8, 8))],
    ids=["mlp", "cnn"],
)
def test_lsuv_gives_unit_variance_at_every_layer_on_real_digits(digits_flat, make, shape):
    x, _ = digits_flat
    torch.manual_seed(0)
    model = make()
    batch = x[:256].reshape(shape)
    before = output_variances(model, batch)
    assert min(before.values()) < 0.1  # PyTorch's default init lets the signal shrink with depth

    report = lsuv_init(model, batch, tol=0.1)

    names = [n for n, _ in weight_layers(model)]
    assert [r.name for r in report] == names and all(isinstance(r, LSUVLayer) for r in report)
    after = output_variances(model, batch)
    assert sum(r.iterations for r in report) >= len(report) - 1  # an orthogonal first layer may already fit
    for r in report:
        assert abs(r.final_var - 1) < 0.1
        assert after[r.name] == pytest.approx(r.final_var, rel=1e-4)
    # the unit variance carries over to unseen images of the same data set
    held_out = output_variances(model, x[1000:1400].reshape(shape))
    assert all(0.6 < v < 1.6 for v in held_out.values()), held_out


def test_lsuv_starts_orthonormal_and_zeroes_biases(digits_flat):
    x, _ = digits_flat
    torch.manual_seed(0)
    model = plain_mlp(3, 64, 64, 10)
    lsuv_init(model, x[:128])
    for layer in model.layers:
        w = layer.weight.detach()
        gram = w @ w.T
        scale = gram.diagonal().mean()
        assert torch.allclose(gram / scale, torch.eye(64), atol=1e-4)  # orthogonal up to the LSUV scale
        assert torch.count_nonzero(layer.bias) == 0


def test_lsuv_without_orthonormal_start_iterates_to_tolerance(digits_flat):
    x, _ = digits_flat
    torch.manual_seed(0)
    model = plain_mlp(6, 32, 64, 10)  # default init with non-zero biases: one rescaling is not exact
    report = lsuv_init(model, x[:256], tol=0.01, max_iters=20, orthonormal=False)
    assert any(r.iterations > 1 for r in report)
    assert all(abs(v - 1) < 0.01 for v in output_variances(model, x[:256]).values())


def test_lsuv_warns_when_a_layer_does_not_converge(digits_flat):
    x, _ = digits_flat
    torch.manual_seed(0)
    model = plain_mlp(4, 32, 64, 10)
    with pytest.warns(LSUVWarning) as caught:
        report = lsuv_init(model, x[:256], tol=1e-6, max_iters=1, orthonormal=False)
    assert all(r.iterations <= 1 for r in report)
    missed = [r.name for r in report if abs(r.final_var - 1) >= 1e-6]
    assert missed and len(caught) == len(missed)  # one warning per layer that missed, naming it
    assert all(f"layer {name} " in str(w.message) for name, w in zip(missed, caught))


def test_lsuv_is_deterministic_restores_modes_and_removes_hooks(digits_flat):
    x, _ = digits_flat
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = plain_cnn(3, 8, 1, 10)
        model.train()
        model.acts[1].eval()
        lsuv_init(model, x[:64].reshape(-1, 1, 8, 8))
        assert [m.training for m in model.modules()] == [m is not model.acts[1] for m in model.modules()]
        assert all(not m._forward_hooks for m in model.modules())
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = plain_mlp(2, 16, 64, 10), plain_mlp(2, 16, 64, 10)
    lsuv_init(a, x[:64], generator=g1)
    lsuv_init(b, x[:64], generator=g2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_lsuv_fixes_the_vanishing_signal_of_a_deep_net(digits_flat):
    """Depth 30: after LSUV the last hidden layer's output std is the first one's (ratio ~1)."""
    x, y = digits_flat
    torch.manual_seed(0)
    model = plain_mlp(30, 64, 64, 10)
    assert signal_stats(model, x[:256], y[:256]).act_std_ratio < 0.2
    lsuv_init(model, x[:256])
    stats = signal_stats(model, x[:256], y[:256])
    assert stats.act_std_ratio == pytest.approx(1.0, abs=0.1)


def test_lsuv_rejects_bad_arguments(digits_flat):
    x, _ = digits_flat
    model = plain_mlp(2, 8, 64, 10)
    with pytest.raises(UserError, match="tol"):
        lsuv_init(model, x[:8], tol=0)
    with pytest.raises(UserError, match="max_iters"):
        lsuv_init(model, x[:8], max_iters=0)
    with pytest.raises(UserError, match="batch"):
        lsuv_init(model, x[:0])
    with pytest.raises(UserError, match="no Linear/Conv"):
        lsuv_init(nn.Sequential(nn.ReLU()), x[:8])
