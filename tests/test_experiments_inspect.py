"""`warmstart inspect` through the real CLI: planted duplicates are found in every file format; files are read safely."""

from __future__ import annotations

import json

import pytest
from _cli import run_cli
import torch
from safetensors.torch import save_file


from warmstart.experiments.inspect import flags, inspect
from warmstart.models import custom_3_layer


pytestmark = pytest.mark.usefixtures("single_thread")


cli = run_cli


@pytest.fixture
def planted():
    """custom_3_layer with conv2's filters 1-3 copies of filter 0 and conv1's filter 5 zeroed."""
    torch.manual_seed(0)
    model = custom_3_layer()
    with torch.no_grad():
        model.conv2.weight[1:4] = model.conv2.weight[0]
        model.conv2.bias[1:4] = model.conv2.bias[0]
        model.conv1.weight[5] = 0
    return {k: v.clone() for k, v in model.state_dict().items()}


def check_planted(result: dict) -> None:
    layers = result["layers"]
    assert list(layers) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    conv2 = layers["conv2"]
    assert (conv2["filters"], conv2["distinct"], conv2["max_cosine"]) == (64, 61, 1.0)
    assert conv2["flags"] == ["duplicates"]
    assert "only 61 of 64 filters distinct: 3 are exact copies" in conv2["explanation"]
    assert "gradient" not in conv2["explanation"]  # a file cannot say how its filters got so
    conv1 = layers["conv1"]
    assert conv1["zero_filters"] == 1 and conv1["distinct"] == 32 and conv1["flags"] == ["zero"]
    assert "1 of the 32 has all-zero weights" in conv1["explanation"]
    assert result["flagged"] == ["conv1", "conv2"]
    assert all(layers[n]["distinct"] == layers[n]["filters"] and not layers[n]["flags"] for n in ("conv3", "fc1", "fc2"))


@pytest.mark.parametrize("form", ["checkpoint", "state_dict", "safetensors", "run_dir"])
def test_planted_duplicates_in_every_format(form, planted, tmp_path, capsys):
    if form == "checkpoint":  # what engine.fit writes
        path = tmp_path / "checkpoint.pt"
        torch.save({"model": planted, "optimizer": {}, "history": [], "best_val_accuracy": 0.5}, path)
    elif form == "state_dict":
        path = tmp_path / "weights.pth"
        torch.save(planted, path)
    elif form == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file(planted, str(path))
    else:
        save_file(planted, str(tmp_path / "model.safetensors"))
        torch.save({"model": {}}, tmp_path / "checkpoint.pt")  # model.safetensors is preferred
        path = tmp_path
    code, out, err = cli(["inspect", str(path), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    check_planted(result)
    assert result["source"].endswith(".safetensors" if form in ("safetensors", "run_dir") else path.name)


def test_text_table_flags_the_planted_layers(planted, tmp_path, capsys):
    torch.save(planted, tmp_path / "w.pth")
    code, out, _ = cli(["inspect", str(tmp_path / "w.pth")], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("5 conv/linear layers, 2 flagged")
    assert lines[1].split() == ["layer", "shape", "filters", "distinct", "max_cos", "rank", "zero", "flags"]
    assert lines[3].split() == ["conv2", "64x32x3x3", "64", "61", "1.0000", "61", "0", "duplicates"]
    assert sum(line.startswith(("conv1:", "conv2:")) for line in lines) == 2 and not any(line.startswith("fc1:") for line in lines)


def test_named_model_random_init_and_with_weights(planted, tmp_path, capsys):
    code, out, _ = cli(["inspect", "custom_3_layer", "--json"], capsys)
    fresh = json.loads(out)
    assert code == 0 and fresh["model"] == "custom_3_layer" and fresh["flagged"] == []
    assert fresh["layers"]["conv1"]["rank"] == 27 and "random init (seed 0)" in fresh["source"]
    assert inspect("custom_3_layer", seed=0)["layers"] == fresh["layers"]  # seeded: the same init again
    torch.save(planted, tmp_path / "w.pth")
    code, out, _ = cli(["inspect", "custom_3_layer", "--weights", str(tmp_path / "w.pth"), "--json"], capsys)
    assert code == 0
    check_planted(json.loads(out))


def test_torchvision_model_by_name():
    result = inspect("mobilenet_v3_small")
    assert len(result["layers"]) == 54 and result["flagged"] == []
    assert result["layers"]["classifier.3"]["filters"] == 1000


def test_quantized_pretrained_file_is_called_identical_not_trained(weights_dir):
    result = inspect("mobilenet_v3_small", weights=weights_dir / "mobilenet_v3_small-imagenet.pth")
    dw = result["layers"]["features.11.block.1.0"]  # a depthwise 5x5 layer: quantization made equal filters
    assert dw["distinct"] < dw["filters"] and "duplicates" in dw["flags"] and dw["zero_filters"] > 0
    assert "exact copies" in dw["explanation"] and "all-zero weights" in dw["explanation"]
    assert not any("gradient" in r["explanation"] for r in result["layers"].values())


def test_flags_of_an_all_zero_layer():
    row = {"filters": 4, "distinct": 1, "rank": 0, "zero_filters": 4, "shape": [4, 3, 3, 3], "duplicate_of": None}
    assert flags(row) == ["all-zero"]
    assert flags({**row, "zero_filters": 0, "duplicate_of": "conv1", "rank": 1}) == ["tied", "duplicates"]
    assert flags({**row, "zero_filters": 1, "distinct": 4, "rank": 2}) == ["zero", "low-rank"]  # 3 non-zero, rank 2


@pytest.mark.parametrize("argv, message", [
    (["mobilenet_v3_smal"], 'unknown model "mobilenet_v3_smal" (did you mean "mobilenet_v3_small"?)'),
    (["/no/such/checkpoint.pt"], "no such file or folder"),
    (["custom_3_layer", "--weights", "WRONG"], "do not fit custom_3_layer"),
    (["EVIL"], "refusing to load"),
    (["RUNS"], "inspect one of: "),
])
def test_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
    torch.save({"conv.weight": torch.ones(2, 2)}, tmp_path / "wrong.pth")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "evil.pt")  # a pickled module: code on load
    (tmp_path / "runs" / "arm").mkdir(parents=True)
    torch.save({"model": {}}, tmp_path / "runs" / "arm" / "checkpoint.pt")
    subst = {"WRONG": str(tmp_path / "wrong.pth"), "EVIL": str(tmp_path / "evil.pt"), "RUNS": str(tmp_path / "runs")}
    code, out, err = cli(["inspect", *[subst.get(a, a) for a in argv]], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
