"""The front door: `import warmstart as ws` (lazy, no torch), ws.train's result object, fresh/overwrite run
directories, UserError from Python, config.json round trips, resume from Python, the model registry, and the
same numbers through the CLI, ws.train and the README's library example."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _runs import cli, small_weights
from PIL import Image

import warmstart as ws
from warmstart.data.spec import DataSpec
from warmstart.engine.config import TrainConfig
from warmstart.engine.run import read_config
from warmstart.transfer.spec import TrainSpec

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DIGITS = dict(model="custom_3_layer", weights="none", strategy="scratch", subset=6, batch_size=8, quiet=True)


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})


# ---------------------------------------------------------------------------------------------------- no torch
@pytest.mark.parametrize("argv, error", [
    (["--help"], None), (["--version"], None), (["train", "--help"], None), (["train", "x", "--epochs", "0"], "--epochs"),
    (["nosuchcommand"], "no such command"),
    (["train", "x", "--strategy", "finetune_al"], 'unknown strategy "finetune_al" (did you mean "finetune-all"?)'),
    (["train", "x", "--strategy", "scratch", "--init", "he_nrmal"], 'unknown init scheme "he_nrmal" (did you mean "he_normal"?)'),
    (["train", "x", "--strategy", "scratch", "--init", "conv=he("], 'unclosed "("'),
    (["train", "x", "--init", "he"], "--init he initialises a model trained from scratch"),
    (["rank", "x", "--candidates", "a,,b"], "an empty candidate (a stray comma?)"),
    (["rank", "x", "--candidates", "he,b.pth"], "--candidates mixes init schemes (he) with weights (b.pth)"),
    (["rank", "x", "--candidates", "nonsense"], "init schemes as candidates need --model ARCH"),
    (["rank", "x", "--candidates", "imagenet", "--verify", "finetune_al"], 'unknown strategy "finetune_al"'),
    (["compare", "x", "--strategies", "scratch,finetune_al"], 'unknown strategy "finetune_al"'),
    (["compare", "x", "--seeds", "0,a"], "every seed must be a whole number"),
    (["compare", "x", "--init", "he_nrmal"], 'unknown init scheme "he_nrmal"'),
    # DATA and --weights that name nothing: checked before torch too, with the loaders' own messages
    (["train", "nosuch/"], "nosuch: no such file or folder; check the path"),
    (["train", "cifar_1O"], 'DATA "cifar_1O": no such file or folder, and not a data set name'),
    (["train", "digits", "--weights", "missing.pth"], "weights file not found:"),
    (["train", "digits", "--weights", "imagenett"], 'unknown weights "imagenett" (did you mean "imagenet"?)'),
    (["compare", "digits", "--weights", "a.pth,b.pth"], "weights file not found:"),
    (["rank", "nosuch/", "--candidates", "none"], "nosuch: no such file or folder"),
])
def test_help_version_and_argument_errors_do_not_import_torch(argv, error):
    code = ("import sys\nfrom warmstart.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, 'torch' in sys.modules, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    *lines, last = p.stderr.strip().splitlines()
    assert last.startswith("exit ") and last.endswith(" False"), p.stderr  # torch was never imported
    assert last.split()[1] == ("0" if error is None else "2")
    if error is not None:  # one error line, the CLI's usual one
        assert len(lines) == 1 and lines[0].startswith("error: ") and error in lines[0], p.stderr


def test_python_m_warmstart_help_imports_no_torch():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "warmstart", "--help"], capture_output=True, text=True,
                       timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "Usage: warmstart" in p.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")]
    assert "warmstart.cli" in imported and "click" in imported  # the -X importtime output is what we think it is
    assert not [m for m in imported if m.split(".")[0] in ("torch", "torchvision", "numpy")]


def test_import_warmstart_is_lazy_and_lists_the_verbs():
    p = _python("import sys, warmstart as ws\nnames = dir(ws)\nprint('torch' in sys.modules, ws.UserError.__name__, "
                "sorted(set(ws.__all__) - set(names)))\nws.fit\nprint('torch' in sys.modules)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["False UserError []", "True"]
    for name in ws.__all__:
        assert getattr(ws, name) is not None
    with pytest.raises(AttributeError):
        ws.no_such_verb  # noqa: B018


# ---------------------------------------------------------------------------------------------- the result object
def test_train_returns_the_model_history_summary_and_predicts(tmp_path, data_root):
    r = ws.train("digits", epochs=2, seed=3, out=tmp_path / "run", **DIGITS)
    assert isinstance(r.model, torch.nn.Module) and r.run_dir == tmp_path / "run"
    assert r.summary == json.loads((r.run_dir / "summary.json").read_text())
    assert [row["epoch"] for row in r.history] == [1, 2] and r.summary["epochs"] == 2
    # the model in memory is the one on disk
    disk = ws.load_run(r.run_dir)
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(r.model.eval()(x), disk.model(x), atol=1e-6)
    assert disk.summary == r.summary and len(disk.history) == 2
    # predict: a PIL image, a float tensor, a uint8 tensor, a file: each prepared like validation
    img = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    img.save(tmp_path / "a.png")
    out = r.predict([img, torch.rand(3, 40, 48), torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), tmp_path / "a.png"],
                    top_k=3)
    assert len(out) == 4 and all(len(o["predictions"]) == 3 for o in out)
    assert out[0]["predictions"] == out[3]["predictions"]  # the same picture, in memory or from its file
    assert {p["class"] for o in out for p in o["predictions"]} <= set(r.summary["classes"])
    html = r._repr_html_()
    assert "<table" in html and "final_val_accuracy" in html and "data:image/png;base64," in html
    with pytest.raises(ws.UserError, match="cannot read an image from a int"):
        r.predict([5])


def test_without_out_every_call_makes_a_fresh_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = ws.train("digits", epochs=1, **DIGITS)
    b = ws.train("digits", epochs=1, **DIGITS)  # the same second: still its own directory
    assert a.run_dir != b.run_dir and a.run_dir.parent == b.run_dir.parent == Path("runs")
    assert (tmp_path / a.run_dir / "summary.json").is_file() and (tmp_path / b.run_dir / "summary.json").is_file()


def test_existing_out_is_an_error_unless_overwrite(tmp_path):
    out = tmp_path / "run"
    first = ws.train("digits", epochs=1, out=out, **DIGITS)
    with pytest.raises(ws.UserError, match="already holds a run"):
        ws.train("digits", epochs=1, out=out, **DIGITS)
    second = ws.train("digits", epochs=2, out=out, overwrite=True, **DIGITS)
    assert second.summary["epochs"] == 2 and len(second.history) == 2 != len(first.history)
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ws.UserError, match="holds no warmstart run"):  # overwrite never deletes what is not a run
        ws.train("digits", epochs=1, out=tmp_path / "mine", overwrite=True, **DIGITS)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("kwargs, argv", [
    (dict(strategy="finetune_al"), ["--strategy", "finetune_al"]),
    (dict(init="hee", strategy="scratch"), ["--init", "hee", "--strategy", "scratch"]),
    (dict(classes="0,x"), ["--classes", "0,x"]),
    (dict(feature_cache="ram"), None),
])
def test_bad_input_from_python_is_the_cli_message_and_writes_nothing(kwargs, argv, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(ws.UserError) as e:
        ws.train("digits", out=out, **{**DIGITS, **kwargs})
    assert not out.exists()
    if argv is not None:
        assert cli("train", "digits", "--model", "custom_3_layer", "--weights", "none", "--out", out, *argv) == 2
        assert capsys.readouterr().err.strip() == f"error: {' '.join(str(e.value).split())}"
        assert not out.exists()


def test_lr_and_quiet_of_the_config_are_honoured(tmp_path, capsys):
    r = ws.train("digits", epochs=1, lr=0.0123, out=tmp_path / "a", **{**DIGITS, "quiet": False})
    assert r.summary["lr"] == 0.0123
    loud = capsys.readouterr().err
    assert "epoch 1/1" in loud
    ws.train("digits", epochs=1, out=tmp_path / "b", **DIGITS)
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------------------------- specs and resume
def test_config_json_holds_the_specs_and_reads_back_equal(tmp_path):
    r = ws.train("digits", epochs=1, init="conv=he_normal,bias=zeros", classes=["3", "1", "4"], out=tmp_path / "run", **DIGITS)
    saved = read_config(r.run_dir)
    data = DataSpec.from_dict(saved["data_spec"])
    spec = TrainSpec.from_dict(saved["train_spec"])
    cfg = TrainConfig.from_dict(saved["train_config"])
    assert data == DataSpec("digits", subset=6, classes=("3", "1", "4"))
    assert spec == TrainSpec(model="custom_3_layer", weights="none", strategy="scratch", init="conv=he_normal,bias=zeros")
    assert str(spec.init) == "conv=he_normal,bias=zeros" and spec.strategy.from_scratch and spec.augments
    assert cfg.epochs == 1 and cfg.batch_size == 8 and cfg.lr is None
    assert json.loads(json.dumps(spec.to_dict())) == saved["train_spec"]  # written out and read back: the same
    assert r.summary["classes"] == ["3", "1", "4"]


def test_resume_from_python_continues_and_refuses_a_changed_option(tmp_path):
    out = tmp_path / "run"
    ws.train("digits", epochs=2, out=out, seed=1, **DIGITS)
    straight = json.loads((out / "summary.json").read_text())
    (out / "summary.json").unlink()  # as if stopped after the last epoch's checkpoint
    again = ws.train(resume=out, quiet=True)
    assert again.summary["final_val_accuracy"] == straight["final_val_accuracy"] and again.run_dir == out
    with pytest.raises(ws.UserError, match=r"--epochs is 4 here but 2 in that run"):
        ws.train(resume=out, epochs=4)
    with pytest.raises(ws.UserError, match="no config.json"):
        ws.train(resume=tmp_path / "nothing")


# --------------------------------------------------------------------------------------------------- registry
def test_model_registry():
    names = ws.list_models()
    assert "custom_3_layer" in names and "resnet18" in names and "mobilenet_v3_small" in names
    m = ws.get_model("custom_3_layer", num_classes=3)
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    assert ws.get_model("custom_3_layer")(torch.rand(1, 3, 32, 32)).shape == (1, 10)  # its own default
    with pytest.raises(ws.UserError, match='did you mean "resnet18"'):
        ws.get_model("resnet81")



def test_one_model_door_reads_the_architecture_from_a_weights_file(weights_dir):
    assert ws.create_model is ws.get_model  # one door, under both names
    v2 = weights_dir / "mobilenet_v2-imagenet.pth"
    m = ws.get_model(weights=str(v2))  # the sidecar names the architecture: no name needed
    assert type(m).__name__ == "MobileNetV2" and m.classifier[-1].out_features == 1000 and m.warmstart_pretrained
    with pytest.raises(ws.UserError, match='is for "mobilenet_v2"'):
        ws.get_model("mobilenet_v3_small", weights=str(v2))


# ----------------------------------------------------------------------------------- one recipe, three doors
def _readme_library_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## As a library"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return next(b for b in blocks if "recipe.run_arm" in b)


def test_cli_ws_train_and_the_readme_example_train_the_same(tmp_path, hymenoptera, weights_dir):
    data = tmp_path / "ants_bees"
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((hymenoptera / split / cls).iterdir())[:4]:
                shutil.copy(f, data / split / cls / f.name)
    w = small_weights(weights_dir, tmp_path / "w", 64)
    args = dict(weights=str(w), strategy="finetune-last:3", epochs=1)
    assert cli("train", data, "--weights", w, "--strategy", "finetune-last:3", "--epochs", 1, "--quiet", "--out", tmp_path / "cli") == 0
    by_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    by_ws = ws.train(str(data), out=tmp_path / "ws", quiet=True, **args).summary

    code = _readme_library_example()
    first = next(line for line in code.splitlines() if line.startswith("DATA, WEIGHTS, EPOCHS, OUT = "))
    code = code.replace(first, f"DATA, WEIGHTS, EPOCHS, OUT = {str(data)!r}, {str(w)!r}, 1, {str(tmp_path / 'parts')!r}")
    code = code.replace('print(ws.apply_init(ws.create_model("resnet18", 10), "he").to_text())', "")  # not about training
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    by_parts = scope["summary"]
    for key in ("final_val_accuracy", "best_val_accuracy", "lr", "backbone_lr", "label_smoothing", "trainable_params"):
        assert by_cli[key] == by_ws[key] == by_parts[key], key
    hist = [json.loads(json.dumps(h)) for h in (scope["fit_result"].history,)][0]
    assert abs(float(hist[-1]["val_loss"]) - ws.load_run(tmp_path / "cli").history[-1]["val_loss"]) < 1e-5


def test_compare_returns_its_table_reading_and_curves(tmp_path):
    c = ws.compare("digits", strategies="scratch", seeds=2, model="custom_3_layer", weights="none", epochs=1, subset=6,
                   batch_size=8, lr=0.004, out=tmp_path / "cmp", quiet=True)
    assert c.run_dir == tmp_path / "cmp" and c.summary["best"] == "scratch"
    assert json.loads((c.run_dir / "summary.json").read_text())["best"] == "scratch"
    [row] = c.table
    assert row["strategy"] == "scratch" and row["seeds"] == 2 and 0 <= row["final_val_accuracy"] <= 1
    assert "scratch" in c.reading and c.curves.is_file()
    assert read_config(c.run_dir)["options"]["lr"] == 0.004  # the config's lr reached the arms
    assert all(r["lr"] == 0.004 for r in (json.loads(p.read_text()) for p in c.run_dir.glob("*/summary.json")))
    html = c._repr_html_()
    assert "<table" in html and "data:image/png;base64," in html
    with pytest.raises(ws.UserError, match="already holds a run"):
        ws.compare("digits", strategies="scratch", model="custom_3_layer", weights="none", out=tmp_path / "cmp", quiet=True)


def test_rank_returns_its_summary_table_and_chart(tmp_path, hymenoptera, weights_dir):
    v3, v2 = weights_dir / "mobilenet_v3_small-imagenet.pth", weights_dir / "mobilenet_v2-imagenet.pth"
    r = ws.rank(hymenoptera, [str(v3), v2], subset=8, device="cpu", out=tmp_path / "rank", quiet=True)
    assert isinstance(r, ws.RankResult) and r.run_dir == tmp_path / "rank"
    on_disk = json.loads((r.run_dir / "summary.json").read_text())
    assert {k: v for k, v in r.summary.items() if k != "report"} == on_disk and r.report == r.run_dir / "report.html"
    assert sorted(r.ranking) == sorted([str(v3), str(v2)]) and r.best == r.ranking[0] and r.verdict == on_disk["verdict"]
    for c in r.summary["candidates"]:  # real features: every score of both pretrained starts
        assert all(v is not None for v in c["scores"].values()) and 0.5 < c["scores"]["probe_cv"] <= 1
    lines = r.text.splitlines()  # what `warmstart rank` prints
    assert "probe_cv" in lines[0] and lines[1].split()[1] == r.summary["candidates"][0]["name"]  # ranked, best first
    # .table: rows of dicts like every result's, best first, one per candidate with every score
    assert [row["candidate"] for row in r.table] == [c["name"] for c in r.summary["candidates"]]
    assert all(row["probe_cv"] == c["scores"]["probe_cv"] for row, c in zip(r.table, r.summary["candidates"]))
    html = r._repr_html_()
    assert r.chart.is_file() and "data:image/png;base64," in html and "<pre>" in html and Path(r.best).stem in html
    assert read_config(r.run_dir)["options"]["subset"] == 8
    with pytest.raises(ws.UserError, match="already holds a run"):
        ws.rank(hymenoptera, [str(v3)], out=tmp_path / "rank", quiet=True)


def test_compare_runs_a_grid_of_starts_from_python(tmp_path, hymenoptera, weights_dir):
    starts = f"{weights_dir / 'mobilenet_v2-imagenet.pth'},{weights_dir / 'mobilenet_v2-inat-insect.pth'}"
    c = ws.compare(hymenoptera, strategies="transfer", model="mobilenet_v2", weights=starts, subset=8, epochs=1,
                   device="cpu", out=tmp_path / "grid", quiet=True)
    g = c.summary["grid"]
    assert g["rows"] == ["mobilenet_v2-imagenet", "mobilenet_v2-inat-insect"] and g["columns"] == ["transfer"]
    assert sorted(row["strategy"] for row in c.table) == ["mobilenet_v2-imagenet/transfer", "mobilenet_v2-inat-insect/transfer"]
    assert {a["final_val_accuracy"] for a in c.summary["runs"]} == {g["cells"][r]["transfer"]["final_val_accuracy"]["mean"]
                                                                    for r in g["rows"]}
    assert (c.run_dir / "mobilenet_v2-inat-insect" / "transfer-seed0" / "arm.json").is_file()


def test_symmetry_and_depth_honour_the_lr_and_refuse_keywords_they_cannot_use(tmp_path):
    r = ws.symmetry("digits", subset=4, lr=0.02, epochs=1, out=tmp_path / "sym")  # the CLI's keywords
    assert isinstance(r, ws.SymmetryResult) and r.run_dir == tmp_path / "sym"
    assert r.summary["lr"] == 0.02 and r.summary["epochs"] == 1
    assert r.summary == json.loads((r.run_dir / "summary.json").read_text())
    # one row per arm; the constant start keeps one distinct conv1 filter of all of them
    assert [row["arm"] for row in r.table] == ["constant", "random"]
    assert r.table[0]["conv1_distinct"] == 1 < r.table[0]["conv1_filters"]
    assert r.text.splitlines()[0].split()[:2] == ["arm", "val_acc"] and r.filters.is_file()
    assert "data:image/png;base64," in r._repr_html_()
    for verb in (ws.symmetry, ws.depth):  # every layer trains at one rate: they take no lr_decay (nor backbone_lr)
        with pytest.raises(TypeError, match="unexpected keyword argument 'lr_decay'"):
            verb("digits", lr_decay=0.5, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_depth_and_symmetry_from_python_can_be_quiet(tmp_path, capsys):
    loud = ws.depth("digits", arms="he", depth=3, epochs=1, out=tmp_path / "loud")
    said = capsys.readouterr().err
    silent = ws.depth("digits", arms="he", depth=3, epochs=1, out=tmp_path / "silent", quiet=True)
    assert "he" in said and capsys.readouterr().err == ""
    assert isinstance(silent, ws.DepthResult) and silent.run_dir == tmp_path / "silent"
    assert silent.summary["arms"]["he"]["final_train_loss"] == pytest.approx(loud.summary["arms"]["he"]["final_train_loss"], rel=1e-6)
    [row] = silent.table
    assert row["arm"] == "he" and row["final_train_loss"] == silent.summary["arms"]["he"]["final_train_loss"]
    assert "Reading: " in silent.text and silent.curves.is_file() and "<table" in silent._repr_html_()
    s = ws.symmetry("digits", subset=10, epochs=1, out=tmp_path / "sym", quiet=True)
    assert capsys.readouterr().err == "" and s.summary["arms"]["constant"]["layers"]["conv1"]["distinct"] == 1


def test_compare_result_renders_its_reading_as_the_report_does(tmp_path):
    """In Jupyter the reading's **bold** and `code` are rendered, not shown as raw Markdown (and HTML is escaped)."""
    r = ws.CompareResult(run_dir=tmp_path, summary={"ranking": [], "strategies": {}, "best": "transfer",
                                                    "reading": "**transfer** wins <b>; try `--seeds 3`"})
    page = r._repr_html_()
    assert "<strong>transfer</strong>" in page and "<code>--seeds 3</code>" in page and "**" not in page and "&lt;b&gt;" in page
