"""`warmstart symmetry` through the real CLI on real CIFAR-10 images: the lecture's result, in summary.json."""

from __future__ import annotations

import contextlib
import io
import json
import urllib.error
import urllib.request

import pytest
from _cli import run_cli

from warmstart.cli import main
import torch


from warmstart.engine.checkpoint import load
from warmstart.experiments.symmetry import arm_model, default_data, sections
from warmstart.models import LECTURE_CONSTANT
from warmstart.report.html import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYER_KEYS = {"filters", "distinct", "max_cosine", "rank"}


pytestmark = pytest.mark.usefixtures("single_thread")


cli = run_cli


def strict_json(path):
    """JSON as the standard has it: NaN or Infinity in the file is an error."""
    def refuse(token):
        raise ValueError(f"{path}: {token} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_root):
    """One run, 3 arms, 1 epoch on 80 + 80 CIFAR-10 images; DATA omitted, found through $WARMSTART_DATA."""
    out = tmp_path_factory.mktemp("symmetry") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("WARMSTART_DATA", str(data_root))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    stdout = io.StringIO()
    try:
        with pytest.raises(SystemExit) as e, contextlib.redirect_stdout(stdout):
            main(["symmetry", "--subset", "8", "--constant-linear", "--out", str(out), "-q"])
    finally:
        mp.undo()
        torch.set_num_threads(before)
    assert e.value.code == 0
    (out / "stdout.txt").write_text(stdout.getvalue())
    return out


def test_default_data_is_the_unpacked_cifar10(data_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WARMSTART_DATA", str(data_root))
    assert default_data() == str(data_root / "cifar10")
    monkeypatch.delenv("WARMSTART_DATA")
    assert default_data() == "cifar10"  # nothing unpacked here: the torchvision data set by name
    assert default_data(data_root) == str(data_root / "cifar10")


def test_summary_shows_the_lecture_result(run, cifar10):
    s = strict_json(run / "summary.json")
    assert set(s["arms"]) == {"constant", "random", "constant-linear"}
    assert isinstance(s["seconds"], float) and s["seconds"] > 0
    assert str(cifar10) in s["data"] and s["train_images"] == 80 and s["val_images"] == 80
    for arm in s["arms"].values():
        assert isinstance(arm["val_accuracy"], float) and 0 <= arm["val_accuracy"] <= 1
        assert set(arm["layers"]) >= {"conv1", "conv2", "conv3", "fc1"}
        for row in arm["layers"].values():
            assert set(row) >= LAYER_KEYS
            assert isinstance(row["max_cosine"], float) and -1 <= row["max_cosine"] <= 1 + 1e-9
    const, rand, lin = (s["arms"][a]["layers"] for a in ("constant", "random", "constant-linear"))
    # constant: conv1 and conv2 stay one filter; conv3 separates (random fc1 behind it) but keeps rank <= 9
    assert (const["conv1"]["filters"], const["conv1"]["distinct"]) == (32, 1)
    assert (const["conv2"]["filters"], const["conv2"]["distinct"]) == (64, 1)
    assert const["conv3"]["start"]["distinct"] == 1 and const["conv3"]["distinct"] > 1 and const["conv3"]["rank"] <= 9
    # constant-linear: with fc1 constant too, nothing downstream tells conv3's filters apart
    assert [lin[n]["distinct"] for n in ("conv1", "conv2", "conv3")] == [1, 1, 1]
    # random: every filter its own
    assert rand["conv1"]["distinct"] == 32 and rand["conv2"]["distinct"] == 64 and rand["conv3"]["distinct"] == 64
    assert rand["conv1"]["rank"] == 27 and rand["conv3"]["rank"] == 64


def test_explanations_say_why(run):
    s = json.loads((run / "summary.json").read_text())
    const, lin = s["arms"]["constant"]["layers"], s["arms"]["constant-linear"]["layers"]
    assert "started identical" in const["conv1"]["explanation"] and "same gradient" in const["conv1"]["explanation"]
    conv3 = const["conv3"]["explanation"]
    assert "random fc1" in conv3 and "3x3 kernel on all 64" in conv3 and f"rank {const['conv3']['rank']} (at most 9)" in conv3
    assert "fc1 gives all 64 of its input channels the same weights" in lin["conv3"]["explanation"]
    assert "symmetry is broken" in s["arms"]["random"]["layers"]["conv1"]["explanation"]


def test_every_arm_is_a_run_that_trained(run):
    for arm in ("constant", "random", "constant-linear"):
        rows = (run / arm / "metrics.csv").read_text().splitlines()
        assert len(rows) == 2 and rows[0].startswith("epoch,")  # header + 1 epoch
        assert (run / arm / "checkpoint.pt").is_file() and (run / arm / "config.json").is_file()
    # the constant arm's conv1 moved away from its start, yet stayed one filter
    trained = load(run / "constant" / "checkpoint.pt")["model"]["conv1.weight"]
    start = arm_model(LECTURE_CONSTANT, 10, 0).conv1.weight.detach()
    assert float((trained - start).norm() / start.norm()) > 1e-5  # 3 SGD steps at lr 0.01
    assert torch.allclose(trained, trained[:1].expand_as(trained), rtol=0, atol=1e-6 * float(trained.abs().max()))
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["subset"] == 8 and config["arms"]["constant"] == LECTURE_CONSTANT


def test_pngs_and_report_sections(run, tmp_path):
    for png in ("conv1_filters.png", "learning_curves.png"):
        assert (run / png).read_bytes()[:8] == PNG_MAGIC
    (section,) = sections(run)
    assert [row[0] for row in section.tables[0].rows] == ["constant", "random", "constant-linear"]
    assert all(f.path.is_file() for f in section.figures)
    assert any("3x3 kernel" in p for p in section.paragraphs)
    html = write_report(tmp_path, "symmetry", [section]).read_text()
    assert "data:image/png;base64," in html and "constant-linear" in html


def test_stdout_table(run):
    lines = (run / "stdout.txt").read_text().splitlines()
    assert lines[0].split()[:3] == ["arm", "val_acc", "conv1"]
    rows = {line.split()[0]: line for line in lines[1:4]}
    assert "1/32" in rows["constant"] and "32/32" in rows["random"] and "1/64 (1)" in rows["constant-linear"]
    s = json.loads((run / "summary.json").read_text())
    assert f"{s['arms']['random']['val_accuracy']:.3f}" in rows["random"]
    assert any(line.startswith("constant: conv3: started as 1 distinct filter") for line in lines)


@pytest.mark.parametrize("argv, message", [
    (["/no/such/cifar"], "/no/such/cifar: no such file or folder"),
    (["--init", "conv=he_nromal"], 'did you mean "he_normal"'),
    (["--init", "fc9=zeros"], 'matches no parameter of Custom3Layer (did you mean "fc2"?)'),
])
def test_bad_input_is_one_error_line_and_no_run_dir(argv, message, tmp_path, cifar10, capsys):
    out = tmp_path / "never"
    args = ["symmetry", *argv] if argv[0].startswith("/") else ["symmetry", str(cifar10), *argv]
    code, _, err = cli([*args, "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()


def test_default_data_missing_offline_names_the_places(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WARMSTART_DATA", raising=False)

    def offline(*a, **k):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    code, _, err = cli(["symmetry", "--data-root", str(tmp_path / "root"), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no DATA given and no unpacked CIFAR-10 folder found" in err and not (tmp_path / "r").exists()
