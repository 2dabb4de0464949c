"""The start as a prior: L2-SP (``--reg l2sp``, transfer.prior + engine.optim.AnchorPull) and WiSE-FT weight
interpolation (``--interpolate``, transfer.wise): parsing, the update's closed form, and real runs on hymenoptera."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from _cli import run_cli
from _runs import cli, small_weights, summary
from warmstart.engine.config import TrainConfig
from warmstart.engine.optim import AnchorPull, build_optimizer, build_scheduler
from warmstart.engine.plan import ParamGroup, Phase
from warmstart.errors import UserError
from warmstart.experiments.compare_parse import parse_strategies
from warmstart.transfer.backbones import create_model
from warmstart.transfer.drift import DriftTracker
from warmstart.transfer.groups import layer_groups
from warmstart.transfer.prior import Reg, anchors_of, apply_reg, parse_reg, penalty
from warmstart.transfer.recipe import snapshot
from warmstart.transfer.spec import TrainSpec, parse_arm
from warmstart.transfer.strategies import parse_strategy
from warmstart.transfer.wise import GRID, choose, mix


# ----------------------------------------------------------------------------------------------- parsing
def test_parse_reg():
    assert parse_reg("none") is None and parse_reg(None) is None and parse_reg("") is None
    assert parse_reg("l2sp") == Reg(0.01, 0.01)
    assert parse_reg("L2SP:0.1") == Reg(0.1, 0.01)
    assert parse_reg("l2sp:0.1,0") == Reg(0.1, 0.0)
    assert parse_reg("l2sp:0,0").spec == "l2sp:0,0"
    for bad in ("l2sp:-1", "l2sp:0.1,-2", "l2sp:x", "l2sp:", "l2sp:1,2,3", "l2sp:nan", "l2sp:inf", "foo", "none:1"):
        with pytest.raises(UserError):
            parse_reg(bad)


def test_arm_modifiers_become_the_train_spec_fields():
    s = parse_arm("finetune-all+l2sp:0.1+interpolate")
    assert (s.strategy, s.reg, s.interpolate) == (parse_strategy("finetune_all"), Reg(0.1, 0.01), True)
    assert s.spec == "finetune-all+l2sp:0.1,0.01+interpolate" and parse_arm(s.spec) == s
    assert parse_arm("Finetune_All + Interpolate + L2SP") == parse_arm("finetune-all+l2sp+interpolate")  # any order, case
    with pytest.raises(UserError, match=r'"\+l2sp" is an arm\'s modifier .*; give one of: scratch'):
        parse_strategy("finetune-all+l2sp")  # a strategy alone is only the strategy
    spec = TrainSpec(strategy="finetune-last:2+l2sp")
    assert spec.strategy.spec == "finetune-last:2" and spec.reg == Reg() and not spec.interpolate
    assert spec.arm == "finetune-last:2+l2sp:0.01,0.01" and spec.to_dict()["reg"] == "l2sp:0.01,0.01"
    assert TrainSpec(strategy="finetune-all", reg="l2sp:1").reg == Reg(1.0, 0.01)
    # compare's --strategies: a comma followed by a number continues l2sp:ALPHA,BETA
    arms = parse_strategies("finetune-all,finetune-all+l2sp:0.1,0.02,finetune-all+interpolate")
    assert [a.spec for a in arms] == ["finetune-all", "finetune-all+l2sp:0.1,0.02", "finetune-all+interpolate"]
    for bad in (dict(strategy="scratch", reg="l2sp"), dict(strategy="transfer", reg="l2sp"),
                dict(strategy="scratch", interpolate=True), dict(strategy="finetune-all", interpolate=True, head_init="random"),
                dict(strategy="finetune-all+l2sp:1", reg="l2sp:2"), dict(strategy="finetune-all+foo")):
        with pytest.raises(UserError):
            TrainSpec(**bad)


def test_apply_reg_replaces_weight_decay():
    phases = [Phase(1, [ParamGroup("features.1", ["a"], 1e-5), ParamGroup("head", ["h"], 1e-4)])]
    assert apply_reg(phases, None) == phases
    (ph,) = apply_reg(phases, Reg(0.3, 0.02))
    assert [(g.name, g.weight_decay, g.anchor) for g in ph.groups] == [("features.1", 0.0, 0.3), ("head", 0.02, 0.0)]


# ----------------------------------------------------------------------------------------------- the update
def _model_and_start():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # training moved the weights away from their start (and far from 0 too)
        for p in model.parameters():
            p.add_(torch.randn_like(p) + 2.0)
    return model, start


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_anchor_pull_is_the_closed_form_and_follows_the_schedule(optimizer):
    """With no loss gradient, one step moves each anchored weight by exactly lr(t) * alpha * (w0 - w): AdamW's
    update of a zero gradient is 0 (its moments are 0), SGD's first step is lr * grad = lr * alpha * (w - w0)."""
    model, start = _model_and_start()
    alpha, lr = 0.5, 0.1
    phase = Phase(2, [ParamGroup("a", ["0.weight", "0.bias"], lr, weight_decay=0.0, anchor=alpha),
                      ParamGroup("head", ["1.weight", "1.bias"], lr)])
    cfg = TrainConfig(optimizer=optimizer, momentum=0.0, weight_decay=0.0, schedule="cosine")
    opt = build_optimizer(model, phase, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=1, epochs=2)
    pull = AnchorPull(model, {n: start[n] for n in ("0.weight", "0.bias")}, coupled=optimizer == "sgd")
    for step in range(2):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        rate = sched.get_last_lr()[0]
        assert rate == pytest.approx(lr * (1 + math.cos(math.pi * step / 2)) / 2)  # 0.1, then 0.05 (cosine, 2 steps)
        opt.zero_grad()
        (0.0 * sum(p.sum() for p in model.parameters())).backward()
        pull.apply(opt)
        opt.step()
        sched.step()
        for n, p in model.named_parameters():
            if n.startswith("0."):
                expected = before[n] - rate * alpha * (before[n] - start[n])
                # float32 a few ulps apart (different operation order): 1e-6 relative
                torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(p.detach(), before[n])  # the head has no anchor and no decay here
        if optimizer == "sgd":
            break  # later SGD steps carry momentum's buffer (0 here) -- the first step is the closed form


def test_anchor_pull_goes_to_the_start_not_to_zero():
    model, start = _model_and_start()
    phase = Phase(1, [ParamGroup("all", [n for n, _ in model.named_parameters()], 0.1, weight_decay=0.0, anchor=1.0)])
    opt = build_optimizer(model, phase, TrainConfig(weight_decay=0.0))
    pull = AnchorPull(model, start, coupled=False)
    dist0 = sum(float((p.detach() - start[n]).norm()) for n, p in model.named_parameters())
    for _ in range(60):
        opt.zero_grad()
        (0.0 * sum(p.sum() for p in model.parameters())).backward()
        pull.apply(opt)
        opt.step()
    for n, p in model.named_parameters():  # (1 - 0.1)^60 = 0.0018 of the way left
        assert float((p.detach() - start[n]).norm()) < 0.01 * dist0
        assert float(p.detach().norm()) > 0.5 * float(start[n].norm())  # not shrunk toward 0


def test_penalty_is_the_formula():
    model, start = _model_and_start()
    params = {n: p.detach() for n, p in model.named_parameters()}
    r = penalty(params, {n: start[n] for n in ("0.weight", "0.bias")}, {"a": ["0.weight", "0.bias"], "head": ["1.weight", "1.bias"]},
                Reg(0.4, 0.2))
    expected = 0.2 * float(((params["0.weight"] - start["0.weight"]) ** 2).sum() + ((params["0.bias"] - start["0.bias"]) ** 2).sum())
    assert r["penalty"]["a"] == pytest.approx(expected, rel=1e-6)
    assert r["head_l2"] == pytest.approx(0.1 * float((params["1.weight"] ** 2).sum()), rel=1e-6)  # the weight, not the bias


def test_one_copy_of_the_start_serves_the_anchors_the_interpolation_and_the_drift(v3_weights):
    model = create_model("mobilenet_v3_small", 2, v3_weights)
    groups = layer_groups(model)
    start = snapshot(model)
    assert start.keys() == model.state_dict().keys()  # BatchNorm's statistics too: --interpolate's a = 0 is the whole start
    anchors = anchors_of(start, groups)
    assert set(anchors) == {n for n, _ in model.named_parameters()} - set(groups[-1].params)  # every group but the head
    assert all(anchors[n] is start[n] for n in anchors)  # read, not copied
    drift = DriftTracker(model, groups, start=start)
    assert all(t is start[n] for g in drift.groups for n, t in zip(g.params, drift.start[g.name]))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # the model moves, its start stays: every group is now 1.5 x its start, 0.5 away
        for p in model.parameters():
            p.mul_(1.5)
    # rel: x 1.5 rounds each float32 value once (relative 6e-8); the distance is summed in float64
    assert drift.distances() == pytest.approx({g.name: 0.5 for g in drift.groups}, rel=1e-6)
    assert all(torch.equal(start[n], before[n]) for n in before)


# ----------------------------------------------------------------------------------------------- interpolation
def test_mix_ends_are_exact():
    model, start = _model_and_start()
    end = {n: p.detach().clone() for n, p in model.named_parameters()}
    end["n"], start["n"] = torch.tensor(7), torch.tensor(3)  # an integer buffer comes from the end
    assert all(torch.equal(mix(start, end, 1.0)[k], end[k]) for k in end)
    assert all(torch.equal(mix(start, end, 0.0)[k], start[k]) for k in end if k != "n")


def test_the_coefficient_is_chosen_on_the_heldout_images_not_on_val():
    """A linear classifier whose start calls every point class 0 and whose end calls it class 1 (by the sign of
    x): the held-out images are class 1 (prefer a = 1), the validation images class 0 (prefer a = 0)."""
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([1.0, -1.0]))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    end = {"weight": torch.zeros(2, 1), "bias": torch.tensor([-1.0, 1.0])}
    x = torch.ones(20, 1)

    def scorer(labels):
        def score(m):
            with torch.no_grad():
                out = m(x)
            return {"accuracy": float((out.argmax(1) == labels).float().mean()),
                    "loss": float(nn.functional.cross_entropy(out, labels))}
        return score

    heldout, val = scorer(torch.ones(20, dtype=torch.long)), scorer(torch.zeros(20, dtype=torch.long))
    assert choose(model, start, end, val, heldout_images=20).alpha == 0.0  # what val would pick
    picked = choose(model, start, end, heldout, heldout_images=20)
    assert picked.alpha == 1.0 and picked.grid == list(GRID) and len(picked.heldout_accuracy) == len(GRID)
    assert torch.equal(model.bias.detach(), end["bias"])  # the model is left at the chosen point


# ----------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def v3_64(weights_dir, tmp_path_factory) -> Path:
    return small_weights(weights_dir, tmp_path_factory.mktemp("w"), 64)  # MobileNetV3-Small reading 64 px images


def _train(data, weights, out, *extra) -> dict:
    assert cli("train", data, "--weights", weights, "--strategy", "finetune-all", "--epochs", "1", "--subset", "6",
               "--batch-size", "4", "--device", "cpu", "--out", out, "-q", *extra) == 0
    return summary(out)


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def test_l2sp_with_zero_strength_is_the_plain_run_and_a_strong_one_stays_near_the_start(hymenoptera, v3_64, tmp_path, single_thread):
    plain = _train(hymenoptera, v3_64, tmp_path / "plain", "--weight-decay", "0")
    zero = _train(hymenoptera, v3_64, tmp_path / "zero", "--reg", "l2sp:0,0", "--weight-decay", "0.5")  # wd replaced
    a, b = _tensors(tmp_path / "plain"), _tensors(tmp_path / "zero")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same operations in the same order: bit for bit
    assert zero["final_val_accuracy"] == plain["final_val_accuracy"]
    assert zero["reg"]["penalty_total"] == 0.0 and zero["reg"]["head_l2"] == 0.0
    # lr * alpha = 1e-5 * 2000 = 0.02 per step: every pretrained group travels less far from its start
    strong = _train(hymenoptera, v3_64, tmp_path / "strong", "--reg", "l2sp:2000", "--weight-decay", "0")
    trained = [g for g in plain["drift"]["final"] if g != "head"]
    assert trained and all(strong["drift"]["final"][g] < plain["drift"]["final"][g] for g in trained), \
        (strong["drift"]["final"], plain["drift"]["final"])
    assert set(strong["reg"]["penalty"]) == set(trained) and strong["reg"]["alpha"] == 2000.0
    cfg = json.loads((tmp_path / "strong" / "config.json").read_text())
    assert cfg["options"]["reg"] == "l2sp:2000" and cfg["train_spec"]["reg"] == "l2sp:2000,0.01"


def test_interpolate_keeps_the_heldout_choice_and_saves_that_point(hymenoptera, v3_64, tmp_path, single_thread, monkeypatch):
    from warmstart.transfer import recipe
    from warmstart.transfer.weights import load_tensors

    seen = []
    real = recipe.evaluate

    def spy(model, dataset, *a, **k):
        seen.append(dataset)
        return real(model, dataset, *a, **k)

    monkeypatch.setattr(recipe, "evaluate", spy)
    out = tmp_path / "wise"
    s = _train(hymenoptera, v3_64, out, "--interpolate")
    w = s["interpolate"]
    # 11 points scored on the held-out training images, then one evaluation of the chosen point on val
    assert len(seen) == len(GRID) + 1 and all(len(d) == w["heldout_images"] == s["heldout_images"] for d in seen[:-1])
    val = seen[-1]
    assert len(val) == s["val_images"] and not set(seen[0].source.items) & set(val.source.items)
    best = max(range(len(GRID)), key=lambda i: (w["heldout_accuracy"][i], -w["heldout_loss"][i], GRID[i]))
    assert w["alpha"] == GRID[best] and s["final_val_accuracy"] == w["val_accuracy"]
    assert s["train_images"] + s["heldout_images"] == 12  # subset 6 per class of 2 classes
    # model.safetensors is theta(a) between the start (pretrained layers + probe head) and the end (the checkpoint)
    end = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    start = {k: v for k, v in load_tensors(v3_64).items() if k in end and v.shape == end[k].shape}
    start.update({f"classifier.3.{k}": v for k, v in load_tensors(out / "probe_head.safetensors").items()})
    start = {k: start.get(k, end[k]) for k in end}  # buffers of frozen BatchNorm: equal at both ends
    saved = _tensors(out)
    mixed = mix(start, end, w["alpha"])
    for k in saved:  # the same formula on the same values: only rounding in (1-a)*x + a*y, 1e-6 relative
        torch.testing.assert_close(saved[k], mixed[k].to(saved[k].dtype), rtol=1e-6, atol=1e-7)
    assert all(torch.equal(mix(start, end, 1.0)[k], end[k]) for k in end)  # a = 1 is the plain fine-tuned model
    # config.json records the options; --resume takes them from there and refuses a changed one
    from warmstart.engine.run import merge_resume

    merged = merge_resume("train", out, {"data": str(hymenoptera), "reg": "none", "interpolate": False, "strategy": "transfer"})
    assert merged["interpolate"] is True and merged["strategy"] == "finetune-all"
    with pytest.raises(UserError, match="--interpolate"):
        merge_resume("train", out, {"data": str(hymenoptera), "interpolate": False}, given=["interpolate"])


def test_interpolate_with_trained_batchnorm_recomputes_its_statistics(hymenoptera, v3_64, tmp_path, single_thread):
    out = tmp_path / "bn"
    s = _train(hymenoptera, v3_64, out, "--interpolate", "--bn", "train")
    assert s["interpolate"]["bn_recomputed"] is True
    end = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    saved = _tensors(out)
    stats = [k for k in saved if k.endswith("running_mean")]
    # the exact mean over the training crops is not the running average training left, at any a
    assert stats and any(not torch.allclose(saved[k], end[k]) for k in stats)


def test_compare_puts_the_modified_arms_beside_the_plain_one(hymenoptera, v3_64, tmp_path, single_thread):
    out = tmp_path / "cmp"
    assert cli("compare", hymenoptera, "--weights", v3_64, "--strategies", "finetune-all,finetune-all+l2sp:0.1,0.02",
               "--epochs", "1", "--subset", "4", "--batch-size", "4", "--device", "cpu", "--out", out, "-q") == 0
    s = summary(out)
    assert set(s["strategies"]) == {"finetune-all", "finetune-all+l2sp:0.1,0.02"}
    assert (out / "finetune-all+l2sp-0.1-0.02-seed0" / "summary.json").is_file()
    arm = summary(out / "finetune-all+l2sp-0.1-0.02-seed0")
    assert arm["reg"]["alpha"] == 0.1 and arm["reg"]["beta"] == 0.02 and "reg" not in summary(out / "finetune-all-seed0")
    assert s["paired"] and (out / "report.html").is_file()


@pytest.mark.parametrize("argv, what", [
    (["--reg", "l2sp:-1"], "ALPHA"),
    (["--reg", "foo"], "unknown --reg"),
    (["--strategy", "scratch", "--interpolate"], "--interpolate"),
    (["--strategy", "transfer", "--reg", "l2sp"], "trains only the new head"),
])
def test_bad_inputs_answer_one_error_line_and_write_nothing(hymenoptera, tmp_path, capsys, argv, what):
    out = tmp_path / "run"
    argv = [a for a in argv]
    if "--strategy" not in argv:
        argv += ["--strategy", "finetune-all"]
    code, stdout, err = run_cli(["train", hymenoptera, *argv, "--out", out], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and what in lines[0], err
    assert not out.exists()
