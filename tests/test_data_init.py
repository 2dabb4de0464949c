"""init_model: init specs and LSUV (which needs a batch) in one place; `--init lsuv` in scratch training,
with signal diagnostics recorded during training."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from warmstart.cli import main
from warmstart.data import ImageDataset, Normalizer, Preprocess, load_data
from warmstart.engine.config import TrainConfig
from warmstart.errors import UserError
from warmstart.init.diagnostics import load_signal
from warmstart.data.spec import DataSpec
from warmstart.engine.run import RunSpec
from warmstart.experiments.train import run_train
from warmstart.transfer.spec import TrainSpec
from warmstart.init.data_init import check_init, init_model, is_lsuv, sample_batch
from warmstart.init.signal import signal_stats
from warmstart.models.plain import plain_mlp


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits_train() -> ImageDataset:
    splits = load_data("digits", subset=30)
    return ImageDataset(splits.train, Preprocess(resize=8, crop=8))


def test_sample_batch_is_seeded_normalised_and_leaves_the_global_rng(digits_train):
    state = torch.get_rng_state()
    x, y = sample_batch(digits_train, 16, seed=3, normalize=Normalizer((0.5,) * 3, (0.5,) * 3))
    assert torch.equal(torch.get_rng_state(), state)
    assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (16,)
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.min()) == -1.0  # uint8 0..255 -> [-1, 1]
    x2, y2 = sample_batch(digits_train, 16, seed=3, normalize=Normalizer((0.5,) * 3, (0.5,) * 3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(sample_batch(digits_train, 16, seed=4, normalize=Normalizer((0.5,) * 3, (0.5,) * 3))[0], x)
    assert len(sample_batch(digits_train, 10_000)[0]) == len(digits_train)  # capped at the data set


def test_init_model_lsuv_reaches_unit_variance_and_other_specs_go_to_apply_init(digits_train):
    x, _ = sample_batch(digits_train, 64, seed=0)
    x = (x[:, :1].float() - 40.0) / 60.0  # roughly standardised grey pixels
    model = plain_mlp(12, 64, 64, 10)
    result = init_model(model, " LSUV ", batch=x, generator=0)
    assert result.spec == "lsuv" and result.table is None and len(result.lsuv) == 13
    stats = signal_stats(model, x, torch.zeros(len(x), dtype=torch.long))
    assert all(abs(layer.out_var - 1) < 0.1 for layer in stats)  # measured independently of lsuv_init
    assert json.loads(json.dumps(result.to_dict()))["lsuv"][0]["name"] == "layers.0"

    he = init_model(plain_mlp(2, 32, 64, 10), "he", batch=x, generator=0)
    assert he.lsuv is None and he.table["layers.0.weight"].scheme == "he_normal"
    assert he.table["layers.0.weight"].eps == pytest.approx((2 / 64) ** 0.5)


def test_lsuv_needs_a_batch_and_stands_alone():
    with pytest.raises(UserError, match="lsuv needs a batch of training inputs"):
        init_model(plain_mlp(2, 8, 4, 2), "lsuv")
    with pytest.raises(UserError, match="cannot be combined"):
        check_init("linear=lsuv,bias=zeros")
    with pytest.raises(UserError, match='unknown init scheme "hee"'):
        check_init("hee")
    assert is_lsuv("Lsuv") and not is_lsuv("he")


def test_train_scratch_with_init_lsuv_and_diagnostics(tmp_path):
    """`train --strategy scratch --init lsuv`: LSUV runs on one training batch (the data is there), and the
    diagnostics record the network at init and after each epoch."""
    out = tmp_path / "scratch"
    summary = run_train(DataSpec("digits", subset=10),
                        TrainSpec(model="custom_3_layer", weights="none", strategy="scratch", init="lsuv", augment="off"),
                        TrainConfig(epochs=2, seed=0, tensorboard=True), run=RunSpec(str(out)), diagnostics=True).summary
    assert summary["epochs"] == 2
    snapshots = load_signal(out)
    assert [s.tag for s in snapshots] == ["init", "epoch 1", "epoch 2"]
    init = snapshots[0]
    assert init.names == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert all(abs(layer.out_var - 1) < 0.1 for layer in init)  # LSUV's unit variance, measured by the recorder
    assert all(layer.pred_var != layer.pred_var for layer in init)  # no plain-net prediction for this model (NaN)
    rows = list(csv.DictReader(open(out / "signal.csv", newline="")))
    assert len(rows) == 3 * 5
    for name in ("signal_layers.png", "signal_histograms_init.png", "signal_histograms_final.png"):
        assert (out / name).stat().st_size > 1000
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "events").iterdir())


def test_train_rejects_lsuv_inside_a_spec_before_writing(tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["train", "digits", "--strategy", "scratch", "--model", "custom_3_layer", "--weights", "none",
              "--init", "conv=lsuv", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be combined" in err[0]
    assert not out.exists()
