"""The linear probe: exact solution (against scikit-learn), the label mapping, and CV choosing the prior."""

from __future__ import annotations

import pytest
import torch
from _transfer_data import hymenoptera_batch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from warmstart.data.transforms import Normalizer
from warmstart.transfer.backbones import create_model
from warmstart.transfer.probe import fit_probe, label_mapping, solve, stratified_folds
from warmstart.transfer.weights import resolve_weights


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return torch.tensor(d.data / 16, dtype=torch.float32), torch.tensor(d.target)


def test_solve_is_scikit_learns_logistic_regression(digits):
    x, y = digits[0][:600], digits[1][:600]
    l2 = 0.01
    w, b = solve(x, y, l2, torch.zeros(10, 64), torch.zeros(10), max_iter=500)
    # scikit-learn minimises 1/2 ||W||^2 + C * sum(CE): the same optimum when C = 1 / (l2 * N)
    ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(x.numpy(), y.numpy())
    ours = (x @ w.T + b).softmax(1)
    theirs = torch.tensor(ref.predict_proba(x.numpy()), dtype=torch.float32)
    assert (ours - theirs).abs().max() < 2e-3
    assert torch.allclose(w, torch.tensor(ref.coef_, dtype=torch.float32), atol=2e-2)


def test_folds_are_stratified_disjoint_and_cover_everything(digits):
    y = digits[1][:203]
    folds = stratified_folds(y, 5, seed=0)
    allidx = torch.cat(folds).sort().values
    assert torch.equal(allidx, torch.arange(len(y)))
    for f in folds:  # every class in every fold, in proportion (+-1)
        counts = torch.bincount(y[f], minlength=10)
        assert (counts - torch.bincount(y, minlength=10) / 5).abs().max() <= 1
    assert [f.tolist() for f in folds] == [f.tolist() for f in stratified_folds(y, 5, seed=0)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in stratified_folds(y, 5, seed=1)]


def test_label_mapping_takes_distinct_best_rows():
    logits = torch.full((6, 5), -5.0)
    logits[:3, 2] = 5.0          # class 0's images score highest on row 2
    logits[3:, 2] = 4.0          # class 1's images too, but less so ...
    logits[3:, 4] = 3.0          # ... so class 1 gets its second choice, row 4
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert label_mapping(logits, y, 2) == [2, 4]
    with pytest.raises(ValueError, match="cannot cover"):
        label_mapping(logits[:, :1], y, 2)


def test_probe_without_a_prior_fits_digits_and_reports_its_choice(digits):
    x, y = digits
    p = fit_probe(x[:500], y[:500], 10, seed=0)
    assert p.prior == "none" and p.mapped_classes is None and p.folds == 5
    assert {row["l2"] for row in p.cv} == {1.0, 0.1, 0.01, 0.001}
    chosen = next(r for r in p.cv if r["l2"] == p.l2)
    assert chosen["loss"] == min(r["loss"] for r in p.cv)
    held_out = ((x[500:] @ p.weight.T + p.bias).argmax(1) == y[500:]).float().mean()
    assert held_out > 0.9


def test_too_few_images_per_class_skip_the_cross_validation(digits):
    x, y = digits
    idx = torch.cat([(y == c).nonzero().flatten()[:1] for c in range(10)])  # one image per class
    p = fit_probe(x[idx], y[idx], 10)
    assert p.folds == 0 and p.cv == [] and p.train_accuracy == 1.0


@pytest.fixture(scope="module")
def imagenet_features(weights_dir, hymenoptera):
    """1024-d features (the input of the ImageNet head) of 20 ants and 20 bees, and that head."""
    w = resolve_weights(str(weights_dir / "mobilenet_v3_small-imagenet.pth"), "mobilenet_v3_small")
    m = create_model("mobilenet_v3_small", None, w).eval()
    x, y = hymenoptera_batch(hymenoptera, "train", per_class=20)
    with torch.inference_mode():
        h = m.classifier[:3](m.avgpool(m.features(Normalizer((0.5,) * 3, (0.5,) * 3)(x))).flatten(1))
    head = m.classifier[3]
    return h.clone(), y, (head.weight.detach().clone(), head.bias.detach().clone()), w.categories


def test_an_informative_pretrained_head_is_chosen_as_the_prior(imagenet_features):
    h, y, prior, cats = imagenet_features
    p = fit_probe(h, y, 2, prior=prior, folds=4)
    assert p.mapped_classes is not None
    assert [cats[j].split(",")[0] for j in p.mapped_classes] == ["ant", "bee"]  # found from the images alone
    best_none = min(r["loss"] for r in p.cv if r["prior"] == "none")
    best_prior = min(r["loss"] for r in p.cv if r["prior"] == "pretrained")
    assert p.prior == "pretrained" and best_prior < best_none
    assert "prior pretrained (ant, bee)" in p.describe(cats)


def test_a_meaningless_prior_loses_to_the_plain_probe(imagenet_features):
    h, y, prior, _ = imagenet_features
    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(prior[0].shape, generator=g) * prior[0].std() * 3, torch.zeros_like(prior[1]))
    p = fit_probe(h, y, 2, prior=noise, folds=4)
    assert p.prior == "none" and p.mapped_classes is None
    assert p.train_accuracy == 1.0


def test_a_prior_for_other_features_is_ignored(imagenet_features):
    h, y, prior, _ = imagenet_features
    p = fit_probe(h[:, :512], y, 2, prior=prior, folds=4)
    assert p.prior == "none" and {r["prior"] for r in p.cv} == {"none"}
