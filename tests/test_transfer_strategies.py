"""Strategies: parsing, each strategy's trainable set, learning rates, and the BatchNorm policy in action."""

from __future__ import annotations

import pytest
import torch
from _transfer_data import hymenoptera_batch

from warmstart.data.transforms import Normalizer
from warmstart.engine.plan import Phase
from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.bn import batchnorms, freeze_bn
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.strategies import Strategy, parse_strategy



@pytest.fixture()
def model(v3_weights):
    torch.manual_seed(0)
    return create_model("mobilenet_v3_small", 2, v3_weights)


@pytest.fixture(scope="module")
def images(hymenoptera):
    return hymenoptera_batch(hymenoptera, "train", per_class=3)


def _params(model, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def test_parse_accepts_the_documented_specs():
    assert parse_strategy("scratch") == Strategy("scratch")
    assert parse_strategy(" Transfer ") == Strategy("transfer")
    assert parse_strategy("finetune-last:3") == Strategy("finetune-last", k=3)
    assert parse_strategy("finetune-all") == Strategy("finetune-all")
    # the alias table: Python's spelling (and "fine-tune") reads as the CLI's, and is written back canonically
    assert parse_strategy("finetune_all") == parse_strategy("Fine-Tune-All") == Strategy("finetune-all")
    assert parse_strategy("finetune_last:2").spec == "finetune-last:2"
    assert parse_strategy("gradual") == Strategy("gradual", every=1)
    assert parse_strategy("gradual:2").spec == "gradual:2"
    assert not parse_strategy("scratch").needs_pretrained and parse_strategy("transfer").needs_pretrained


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tranfser", 'did you mean "transfer"'),
        ("finetune-last", "needs the number of blocks"),
        ("finetune-last:x", "K \\(blocks to fine-tune\\) must be a positive integer"),
        ("gradual:0", "E \\(epochs per unfreezing step\\) must be a positive integer"),
        ("transfer:3", 'strategy "transfer" takes no ":3"'),
    ],
)
def test_parse_errors_say_what_to_do(spec, message):
    with pytest.raises(UserError, match=message):
        parse_strategy(spec)


def test_each_strategy_trains_exactly_what_it_says(model):
    groups = layer_groups(model)
    everything = _params(model, "")

    def trainable(spec, **kw):
        phases = parse_strategy(spec).phases(groups, epochs=4, lr=0.01, **kw)
        return [set(p.trainable) for p in phases]

    assert trainable("transfer") == [{"classifier.3.weight", "classifier.3.bias"}]
    assert trainable("finetune-last:1") == [_params(model, "classifier.")]
    assert trainable("finetune-last:2") == [_params(model, "classifier.", "features.12.")]
    assert trainable("finetune-last:14") == [everything]
    assert trainable("finetune-all") == [everything]
    assert trainable("scratch") == [everything]
    steps = [set(p.trainable) for p in parse_strategy("gradual:2").phases(groups, epochs=5, lr=0.01)]
    assert steps == [{"classifier.3.weight", "classifier.3.bias"}, _params(model, "classifier."), _params(model, "classifier.", "features.12.")]


def test_gradual_phases_use_up_exactly_the_epochs(model):
    groups = layer_groups(model)
    plan = parse_strategy("gradual:2").phases(groups, epochs=5, lr=0.01)
    assert [(p.name, p.epochs) for p in plan] == [("head", 2), ("unfreeze classifier.0", 2), ("unfreeze features.12", 1)]
    for every, epochs in [(1, 1), (1, 20), (3, 50), (4, 7)]:
        plan = Strategy("gradual", every=every).phases(groups, epochs=epochs, lr=0.1)
        assert sum(p.epochs for p in plan) == epochs
        assert [len(p.groups) for p in plan] == list(range(1, len(plan) + 1))
    plan = Strategy("gradual", every=1).phases(groups, epochs=20, lr=0.1)
    assert len(plan) == 15 and plan[-1].epochs == 6 and len(plan[-1].trainable) == len(list(model.parameters()))


def test_finetune_last_k_must_fit_the_model(model):
    with pytest.raises(UserError, match=r"finetune-last:15: K must be 1\.\.14, the number of layer groups below the head \(stem, features.1"):
        parse_strategy("finetune-last:15").phases(layer_groups(model), epochs=1, lr=0.1)


def test_discriminative_learning_rates(model):
    groups = layer_groups(model)
    lrs = lambda phase: {g.name: g.lr for g in phase.groups}  # noqa: E731
    lr = lrs(parse_strategy("finetune-all").phases(groups, epochs=1, lr=0.01, lr_decay=0.5)[0])
    assert lr["head"] == 0.01
    assert lr["classifier.0"] == pytest.approx(0.001) and lr["features.12"] == pytest.approx(0.0005)
    assert lr["stem"] == pytest.approx(0.001 * 0.5**13)
    lr = lrs(parse_strategy("finetune-last:2").phases(groups, epochs=1, lr=0.01, backbone_lr=0.003)[0])
    assert lr == {"features.12": pytest.approx(0.003), "classifier.0": pytest.approx(0.003), "head": 0.01}
    lr = lrs(parse_strategy("scratch").phases(groups, epochs=1, lr=0.05, backbone_lr=0.003, lr_decay=0.5)[0])
    assert set(lr.values()) == {0.05}
    with pytest.raises(UserError, match="--lr-decay must be a number in \\(0, 1\\]"):
        parse_strategy("finetune-all").phases(groups, epochs=1, lr=0.01, lr_decay=1.5)
    with pytest.raises(UserError, match='unknown BatchNorm policy "froze" \\(did you mean "frozen"\\?\\)'):
        parse_strategy("finetune-all").phases(groups, epochs=1, lr=0.01, bn="froze")


def _apply(model, phase: Phase) -> None:
    """What the engine does at the start of a phase's epoch."""
    trainable = set(phase.trainable)
    for n, p in model.named_parameters():
        p.requires_grad_(n in trainable)
    model.train()
    freeze_bn(model, phase.eval_modules)


def _one_step(model, phase: Phase, images) -> dict[str, torch.Tensor]:
    """One SGD step on real images; returns the state before it."""
    x, y = images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _apply(model, phase)
    opt = torch.optim.SGD([{"params": [dict(model.named_parameters())[n] for n in g.params], "lr": g.lr} for g in phase.groups])
    loss = torch.nn.functional.cross_entropy(model(Normalizer((0.5,) * 3, (0.5,) * 3)(x)), y)
    loss.backward()
    opt.step()
    return before


def _changed(model, before) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_transfer_keeps_every_frozen_module_in_eval_mode(model):
    phase = parse_strategy("transfer").phases(layer_groups(model), epochs=1, lr=0.01)[0]
    _apply(model, phase)
    leaves_training = {n for n, m in model.named_modules() if m.training and not list(m.children())}
    assert leaves_training == {"classifier.3"}  # dropout, BN, activations of the frozen part: all in eval


def test_bn_frozen_keeps_pretrained_statistics_while_the_trainable_part_moves(model, images):
    phase = parse_strategy("finetune-last:2").phases(layer_groups(model), epochs=1, lr=0.01, bn="frozen")[0]
    assert "features.11" in phase.eval_modules and "features.12.1" in phase.eval_modules
    assert not any(m.startswith("classifier") for m in phase.eval_modules)
    before = _one_step(model, phase, images)
    changed = _changed(model, before)
    assert changed == set(phase.trainable)  # weights that train moved; no running statistic did
    assert all(not model.get_submodule(b).training for b in batchnorms(model))


def test_bn_train_lets_trainable_groups_update_their_statistics(model, images):
    phase = parse_strategy("finetune-last:2").phases(layer_groups(model), epochs=1, lr=0.01, bn="train")[0]
    assert "features.12.1" not in phase.eval_modules and "features.11" in phase.eval_modules
    before = _one_step(model, phase, images)
    changed = _changed(model, before)
    stats = {"features.12.1.running_mean", "features.12.1.running_var", "features.12.1.num_batches_tracked"}
    assert changed == set(phase.trainable) | stats


def test_without_pretrained_weights_trainable_batchnorms_train(model):
    groups = layer_groups(model)
    phase = parse_strategy("finetune-last:2").phases(groups, epochs=1, lr=0.01, pretrained=False)[0]
    assert "features.12.1" not in phase.eval_modules and "features.11" in phase.eval_modules
    assert parse_strategy("scratch").phases(groups, epochs=1, lr=0.01)[0].eval_modules == []


def test_frozen_prefix(model):
    groups = layer_groups(model)
    assert parse_strategy("transfer").frozen_prefix(groups) == groups[:-1]
    assert parse_strategy("finetune-last:2").frozen_prefix(groups) == groups[:12]
    assert parse_strategy("finetune-all").frozen_prefix(groups) == []
    assert parse_strategy("scratch").frozen_prefix(groups) == []
    assert parse_strategy("gradual:2").frozen_prefix(groups, epochs=5) == groups[:12]
    assert parse_strategy("gradual:2").frozen_prefix(groups, epochs=2) == groups[:-1]
    with pytest.raises(ValueError, match="needs epochs"):
        parse_strategy("gradual").frozen_prefix(groups)
