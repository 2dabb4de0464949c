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


# ------------------------------------------------------------------ the fast probe against the exhaustive original
def _old_fit_probe():
    """The original probe (every candidate by autograd L-BFGS to tight tolerances), kept in the benchmark only."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_probe import old_fit_probe

    return old_fit_probe


def _assert_same_probe(new, old, cv_tol: float) -> None:
    assert (new.l2, new.prior, new.mapped_classes) == (old["l2"], old["prior"], old["mapped_classes"])
    assert [(r["prior"], r["l2"]) for r in new.cv] == [(r["prior"], r["l2"]) for r in old["cv"]]
    chosen = next(i for i, r in enumerate(old["cv"]) if (r["prior"], r["l2"]) == (old["prior"], old["l2"]))
    assert abs(new.cv[chosen]["loss"] - old["cv"][chosen]["loss"]) < 1e-3
    for n, o in zip(new.cv, old["cv"]):
        assert abs(n["loss"] - o["loss"]) < cv_tol, (n, o)
        assert len(n["fold_accuracy"]) == len(o["fold_accuracy"]) == new.folds
    assert (new.weight - old["weight"]).abs().max() < 2e-3 * old["weight"].abs().max()
    assert (new.bias - old["bias"]).abs().max() < 2e-3 * max(1.0, old["bias"].abs().max().item())


def test_the_fast_probe_chooses_and_solves_as_the_exhaustive_one_on_hymenoptera(imagenet_features):
    h, y, prior, _ = imagenet_features
    new = fit_probe(h, y, 2, prior=prior)
    old = _old_fit_probe()(h, y, 2, prior=prior)
    _assert_same_probe(new, old, cv_tol=2e-3)
    assert new.prior == "pretrained"


@pytest.fixture(scope="module")
def cifar10_features(v3_weights, cifar10):
    """1024-d head inputs of 10 CIFAR-10 training images per class (10 classes) at 64 px, and the ImageNet head."""
    from _transfer_data import image_files, load_uint8

    m = create_model("mobilenet_v3_small", None, v3_weights).eval()
    classes = sorted(p.name for p in (cifar10 / "train").iterdir() if p.is_dir())
    assert len(classes) == 10
    xs, ys = [], []
    for label, c in enumerate(classes):
        for p in image_files(cifar10 / "train" / c, 10):
            xs.append(load_uint8(p, 64, 64))
            ys.append(label)
    with torch.inference_mode():
        h = m.classifier[:3](m.avgpool(m.features(Normalizer((0.5,) * 3, (0.5,) * 3)(torch.stack(xs)))).flatten(1))
    head = m.classifier[3]
    return h.clone(), torch.tensor(ys), (head.weight.detach().clone(), head.bias.detach().clone())


def test_the_fast_probe_chooses_and_solves_as_the_exhaustive_one_on_cifar10(cifar10_features):
    h, y, prior = cifar10_features
    new = fit_probe(h, y, 10, prior=prior)
    old = _old_fit_probe()(h, y, 10, prior=prior)
    # the weakly regularised candidates stop at the iteration cap in both, on float paths that differ
    _assert_same_probe(new, old, cv_tol=1e-2)
    assert len(new.cv) == 8 and new.folds == 5


def test_solve_in_the_row_space_is_the_solve_in_feature_space(imagenet_features):
    """Fewer rows than features: the SVD basis gives the optimum of the full problem (autograd reference)."""
    import torch.nn.functional as F

    h, y, prior, _ = imagenet_features
    w0, b0 = prior[0][[310, 309]].clone(), prior[1][[310, 309]].clone()
    w, b = solve(h, y, 0.1, w0, b0, max_iter=300)
    ref_w, ref_b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([ref_w, ref_b], max_iter=300, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(h @ ref_w.T + ref_b, y) + 0.05 * (ref_w - w0).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert (w - ref_w.detach()).abs().max() < 1e-3 * ref_w.abs().max()
    assert (b - ref_b.detach()).abs().max() < 1e-3
