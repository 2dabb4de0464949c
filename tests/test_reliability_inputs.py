"""Bad inputs through the real CLI: one `error:` line that says what, where and what to do; exit code 2;
no traceback; nothing written. And odd but valid images: accepted and converted.

Every case runs `warmstart train` in-process (`warmstart.cli.main`) on a few real hymenoptera JPEGs. The run
directory given with --out must not exist afterwards: everything is validated before it is created.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from _reliability import FAST, cli, env_one_thread, image_folder, tree
from warmstart.data.images import open_image

V3 = "mobilenet_v3_small"


@dataclass
class Ctx:
    tmp: Path
    hymenoptera: Path
    weights_dir: Path
    good: Path          # a valid 2-class folder, 3 images per class
    finished: Path      # a finished 1-epoch run of FAST on `good` (do not modify: copy it)

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def folder(self, name: str, n: int = 3) -> Path:
        return image_folder(self.tmp / name, self.hymenoptera, n)

    def v3(self, name: str, pth: str = "mobilenet_v3_small", meta: str | dict | None = "mobilenet_v3_small") -> Path:
        """A weights file in tmp: the tensors of shared/<pth>, the sidecar of shared/<meta> (a dict: that JSON)."""
        d = self.tmp / "w"
        d.mkdir(exist_ok=True)
        shutil.copy(self.weights_dir / f"{pth}-imagenet.pth", d / f"{name}.pth")
        if isinstance(meta, str):
            shutil.copy(self.weights_dir / f"{meta}-imagenet.json", d / f"{name}.json")
        elif isinstance(meta, dict):
            (d / f"{name}.json").write_text(json.dumps(meta))
        return d / f"{name}.pth"

    def meta(self) -> dict:
        return json.loads((self.weights_dir / "mobilenet_v3_small-imagenet.json").read_text())


@dataclass
class Case:
    args: list                      # after "train"
    expect: list[str]               # substrings of the error line
    unchanged: Path | None = None   # a folder the failed command must leave exactly as it was
    out: bool = True                # pass --out ctx.out


CASES: dict[str, Callable[[Ctx], Case]] = {}


def case(name: str):
    def deco(f):
        CASES[name] = f
        return f
    return deco


def _first(folder: Path) -> Path:
    return sorted(folder.glob("*.jpg"))[0]


# ------------------------------------------------------------------------------------------------ images and folders
@case("truncated JPEG")
def _(t: Ctx) -> Case:
    d = t.folder("trunc")
    f = _first(d / "bees")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return Case([d, *FAST], [f"{f}: cannot decode image (truncated file?)", "fix or remove it, or pass --skip-bad-images"])


@case("zero-byte file")
def _(t: Ctx) -> Case:
    d = t.folder("zero")
    (d / "ants" / "empty.jpg").write_bytes(b"")
    return Case([d, *FAST], [f"{d / 'ants' / 'empty.jpg'}: cannot decode image (not an image file, or an empty one)"])


@case("text file named .jpg")
def _(t: Ctx) -> Case:
    d = t.folder("text")
    (d / "bees" / "notes.jpg").write_text("field notes, not a photo\n")
    return Case([d, *FAST], [f"{d / 'bees' / 'notes.jpg'}: cannot decode image", "--skip-bad-images"])


@case("empty class folder")
def _(t: Ctx) -> Case:
    d = t.folder("emptyclass")
    (d / "wasps").mkdir()
    return Case([d, *FAST], [f'{d / "wasps"}: class folder "wasps" has no images', "add images or remove the folder"])


@case("a single class")
def _(t: Ctx) -> Case:
    d = t.folder("single")
    shutil.rmtree(d / "bees")
    return Case([d, *FAST], [f'{d}: only one class folder ("ants")', "at least 2 classes"])


@case("DATA path missing")
def _(t: Ctx) -> Case:
    return Case([t.tmp / "no" / "such" / "folder", *FAST], [f"{t.tmp / 'no' / 'such' / 'folder'}: no such file or folder", "check the path"])


@case("DATA name misspelt")
def _(t: Ctx) -> Case:
    return Case(["digts", *FAST], ['DATA "digts": no such file or folder, and not a data set name (did you mean "digits"?)'])


@case("DATA a file that is not a CSV")
def _(t: Ctx) -> Case:
    (t.tmp / "labels.txt").write_text("a,b\n")
    return Case([t.tmp / "labels.txt", *FAST], ["labels.txt: a file must be a CSV (path,label[,split])", "pass their folder"])


# ------------------------------------------------------------------------------------------------ CSV
def _csv(t: Ctx, name: str, header: str, rows: list[str]) -> Path:
    p = t.tmp / name
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def _rows(t: Ctx) -> list[str]:
    return [f"{p},{p.parent.name}" for p in sorted(t.good.glob("*/*.jpg"))]


@case("CSV without a label column")
def _(t: Ctx) -> Case:
    p = _csv(t, "a.csv", "path,klass", _rows(t))
    return Case([p, *FAST], [f'{p}: no "label" column in the header row (found: path, klass)', "path,label[,split]"])


@case("CSV row with an unknown path")
def _(t: Ctx) -> Case:
    p = _csv(t, "b.csv", "path,label", _rows(t)[:3] + ["photos/missing.jpg,ants"] + _rows(t)[3:])
    return Case([p, *FAST], [f"{p} line 5: no such file photos/missing.jpg (looked for {t.tmp / 'photos' / 'missing.jpg'})",
                             "or pass --skip-bad-images"])


@case("CSV row with a blank label")
def _(t: Ctx) -> Case:
    rows = _rows(t)
    path = rows[2].split(",")[0]
    p = _csv(t, "c.csv", "path,label", rows[:2] + [f"{path},  "] + rows[3:])
    return Case([p, *FAST], [f"{p} line 4: blank label for {path}; give every image a class"])


@case("CSV with a misspelt split")
def _(t: Ctx) -> Case:
    rows = [r + (",val" if i % 3 == 0 else ",train") for i, r in enumerate(_rows(t))]
    rows[1] = rows[1].rsplit(",", 1)[0] + ",trian"
    p = _csv(t, "d.csv", "path,label,split", rows)
    return Case([p, *FAST], [f'{p} line 3: unknown split "trian" (did you mean "train"?)'])


# ------------------------------------------------------------------------------------------------ weights
@case("weights of another architecture")
def _(t: Ctx) -> Case:
    w = t.v3("v2_posing_as_v3", pth="mobilenet_v2")  # MobileNetV2 tensors, a sidecar that claims mobilenet_v3_small
    return Case([t.good, "--model", V3, "--weights", w, "--strategy", "transfer", "--epochs", "1", "--device", "cpu"],
                [f"weights {w} do not fit mobilenet_v3_small:",
                 '"features.0.0.weight" has shape [32, 3, 3, 3] in the weights vs [16, 3, 3, 3] in mobilenet_v3_small',
                 "are they for another architecture?"])


@case("weights whose sidecar names another architecture")
def _(t: Ctx) -> Case:
    w = t.v3("v2", pth="mobilenet_v2", meta="mobilenet_v2")
    return Case([t.good, "--model", V3, "--weights", w, "--strategy", "transfer"],
                [f'weights file {w} is for "mobilenet_v2" (its v2.json says so)', "pass --model mobilenet_v2 or other weights"])


@case("weights metadata JSON missing")
def _(t: Ctx) -> Case:
    w = t.v3("bare", meta=None)
    return Case([t.good, "--model", V3, "--weights", w], [f"weights file {w} needs its metadata next to it in {w.with_suffix('.json')}"])


@case("weights metadata JSON malformed")
def _(t: Ctx) -> Case:
    w = t.v3("broken", meta=None)
    w.with_suffix(".json").write_text('{"arch": "mobilenet_v3_small", "num_classes": 1000,')
    return Case([t.good, "--model", V3, "--weights", w], [f"{w.with_suffix('.json')}: not valid JSON", "see shared/weights/*.json"])


@case("weights metadata JSON without mean")
def _(t: Ctx) -> Case:
    meta = t.meta()
    del meta["mean"]
    w = t.v3("nomean", meta=meta)
    return Case([t.good, "--model", V3, "--weights", w], [f'{w.with_suffix(".json")}: missing key "mean"'])


@case("weights file that is text")
def _(t: Ctx) -> Case:
    w = t.v3("text")
    w.write_text("these are not the weights you are looking for\n")
    return Case([t.good, "--model", V3, "--weights", w, "--strategy", "transfer"],
                [f"cannot read weights file {w}", "the file is damaged or not a PyTorch weights file"])


@case("weights file cut short")
def _(t: Ctx) -> Case:
    w = t.v3("cut")
    w.write_bytes(w.read_bytes()[:100_000])
    return Case([t.good, "--model", V3, "--weights", w, "--strategy", "transfer"],
                [f"cannot read weights file {w}", "damaged or not a PyTorch weights file"])


@case("weights name misspelt")
def _(t: Ctx) -> Case:
    return Case([t.good, "--model", V3, "--weights", "imagenett"], ['unknown weights "imagenett" (did you mean "imagenet"?)'])


# ------------------------------------------------------------------------------------------------ numbers and names
@case("--epochs not a number")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--epochs", "ten"], ["invalid value for '--epochs': 'ten' is not a valid integer", "warmstart train --help"])


@case("--epochs negative")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--epochs", "-3"], ["invalid value for '--epochs': -3 is not in the range x>=1"])


@case("--lr not a number")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--lr", "fast"], ["invalid value for '--lr': 'fast' is not a valid float"])


@case("--lr negative")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--lr", "-0.1"], ["invalid value for '--lr': -0.1 is not in the range x>0"])


@case("--batch-size zero")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--batch-size", "0"], ["invalid value for '--batch-size': 0 is not in the range x>=1"])


@case("--batch-size not a number")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--batch-size", "eight"], ["invalid value for '--batch-size': 'eight' is not a valid integer"])


@case("--val-fraction out of range")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--val-fraction", "1.5"], ["invalid value for '--val-fraction': 1.5 is not in the range 0<x<1"])


@case("unknown strategy")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--strategy", "finetune_al"],
                ['unknown strategy "finetune_al" (did you mean "finetune-all"?)', "choose one of: scratch, transfer"])


@case("finetune-last:K beyond the model")
def _(t: Ctx) -> Case:
    return Case([t.good, "--model", V3, "--weights", t.weights_dir / "mobilenet_v3_small-imagenet.pth", "--strategy", "finetune-last:99"],
                ["finetune-last:99: K must be 1..", "use finetune-all to train everything"])


@case("unknown model")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--model", "mobilenet_v3_smal"],
                ['unknown architecture "mobilenet_v3_smal" (did you mean "mobilenet_v3_small"?)'])


@case("unknown init scheme")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--init", "conv=he_normall"],
                ['init spec: "conv=he_normall": unknown init scheme "he_normall" (did you mean "he_normal"?)'])


@case("init spec with an unclosed parenthesis")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--init", "linear=normal(0.01"], ['init spec: unclosed "(" in "linear=normal(0.01"'])


@case("--init with a pretrained strategy")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--strategy", "transfer", "--init", "he"], ["--init he initialises a model trained from scratch",
                                                                             "drop --init or use --strategy scratch"])


@case("unknown device")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--device", "tpu"], ['unknown device "tpu" (did you mean "cpu"?)'])


@case("unknown optimizer")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--optimizer", "adam"], ["invalid value for '--optimizer': 'adam' is not one of 'sgd', 'adamw'"])


@case("unknown option")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--epoch", "3"], ["no such option '--epoch'", "'--epochs'"])


@case("unknown class in --classes")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--classes", "ants,wasps"], ["--classes: 'wasps' is not a class of good (it has: ants, bees)"])


# ------------------------------------------------------------------------------------------------ --out and --resume
@case("--out under a regular file")
def _(t: Ctx) -> Case:
    (t.tmp / "afile").write_text("in the way\n")
    return Case([t.good, *FAST, "--out", t.tmp / "afile" / "run"],
                [f"cannot write to --out {t.tmp / 'afile' / 'run'}: Not a directory; choose a folder you can write to"],
                unchanged=t.tmp, out=False)


@case("--out is a file")
def _(t: Ctx) -> Case:
    (t.tmp / "afile").write_text("in the way\n")
    return Case([t.good, *FAST, "--out", t.tmp / "afile"], [f"invalid value for '--out': Directory '{t.tmp / 'afile'}' is a file"],
                unchanged=t.tmp, out=False)


@case("--out holds a run already")
def _(t: Ctx) -> Case:
    return Case([t.good, *FAST, "--out", t.finished], [f"--out {t.finished} already holds a run", f"pass --resume {t.finished}"],
                unchanged=t.finished, out=False)


@case("--resume with a different --lr")
def _(t: Ctx) -> Case:
    return Case([t.good, "--resume", t.finished, "--lr", "0.5"],
                [f"--resume {t.finished}: --lr is 0.5 here but not given in that run", "drop the option to continue it"],
                unchanged=t.finished, out=False)


@case("--resume with different --epochs")
def _(t: Ctx) -> Case:
    return Case([t.good, "--resume", t.finished, "--epochs", "3"], [f"--resume {t.finished}: --epochs is 3 here but 1 in that run"],
                unchanged=t.finished, out=False)


@case("--resume of another command's run")
def _(t: Ctx) -> Case:
    run = t.tmp / "other"
    shutil.copytree(t.finished, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "command": "compare"}))
    return Case([t.good, "--resume", run], [f"--resume {run}: that run was made by 'warmstart compare', not 'train'; continue it with "
                                            f"'warmstart compare --resume {run}'"],
                unchanged=run, out=False)


@case("DATA missing, no --resume")
def _(t: Ctx) -> Case:
    return Case([*FAST], ["missing argument 'DATA' (or continue a run with --resume RUN_DIR) (see 'warmstart train --help')"])


@case("--resume with other DATA")
def _(t: Ctx) -> Case:
    other = t.folder("other")
    return Case([other, "--resume", t.finished], [f"--resume {t.finished}: DATA is '{other}' here but '{t.good}' in that run"],
                unchanged=t.finished, out=False)


@case("--resume of a folder that is no run")
def _(t: Ctx) -> Case:
    return Case([t.good, "--resume", t.good], [f"{t.good} is not a warmstart run directory (no config.json)"],
                unchanged=t.good, out=False)


@case("--resume with a damaged checkpoint")
def _(t: Ctx) -> Case:
    run = t.tmp / "damaged"
    shutil.copytree(t.finished, run)
    (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:5000])
    return Case([t.good, "--resume", run], [f"cannot read checkpoint {run / 'checkpoint.pt'}", "the file is damaged"],
                unchanged=run, out=False)


# ------------------------------------------------------------------------------------------------ the tests
@pytest.fixture(scope="module")
def shared(tmp_path_factory, hymenoptera) -> tuple[Path, Path]:
    good = image_folder(tmp_path_factory.mktemp("data") / "good", hymenoptera, 3)
    finished = tmp_path_factory.mktemp("runs") / "finished"
    r = cli("train", good, *FAST, "--out", finished, "-q")
    assert r.code == 0, r.err
    return good, finished


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_error_line_exit_2_and_writes_nothing(name, shared, tmp_path, hymenoptera, weights_dir):
    t = Ctx(tmp_path, hymenoptera, weights_dir, *shared)
    c = CASES[name](t)
    before = tree(c.unchanged) if c.unchanged else None
    r = cli("train", *c.args, *(["--out", t.out] if c.out else []), "-q")
    print(f"{name}: {r.err.strip()}")  # the real error line (pytest -s shows them all)
    assert r.code == 2, r.err
    line = r.error
    for piece in c.expect:
        assert piece in line, f"{piece!r} not in {line!r}"
    assert not t.out.exists(), "the run directory was created"
    if before is not None:
        assert tree(c.unchanged) == before


def test_at_least_twenty_kinds_of_bad_input():
    assert len(CASES) >= 20


def test_demo_rejects_a_bad_seed():
    r = cli("demo", "--seed", "many")
    assert r.code == 2 and "invalid value for '--seed': 'many' is not a valid integer" in r.error


def test_the_console_script_prints_only_the_error_line(tmp_path, hymenoptera):
    """The real process: log lines, then exactly one `error:` line last, exit code 2, no traceback."""
    d = image_folder(tmp_path / "d", hymenoptera, 3)
    (d / "ants" / "empty.jpg").write_bytes(b"")
    p = subprocess.run([sys.executable, "-m", "warmstart", "train", str(d), *FAST, "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env_one_thread(), timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]
    assert lines[-1] == f"error: {d / 'ants' / 'empty.jpg'}: cannot decode image (not an image file, or an empty one); " \
                        "fix or remove it, or pass --skip-bad-images"
    assert not (tmp_path / "out").exists()


def test_skip_bad_images_trains_on_the_rest_with_one_warning(tmp_path, hymenoptera):
    d = image_folder(tmp_path / "d", hymenoptera, 4)
    f = _first(d / "bees")
    f.write_bytes(f.read_bytes()[:2000])
    (d / "ants" / "empty.jpg").write_bytes(b"")
    (d / "ants" / "notes.jpg").write_text("not a photo")
    r = cli("train", d, *FAST, "--skip-bad-images", "--out", tmp_path / "out", "-q")
    assert r.code == 0, r.err
    assert r.err_lines and all(ln.startswith("warning: skipped ") for ln in r.err_lines), r.err  # one line per split at most
    skipped = [re.match(r"warning: skipped (\d+) unreadable images \(first: (.+)\)$", ln) for ln in r.err_lines]
    assert len(skipped) <= 2 and all(skipped) and sum(int(m[1]) for m in skipped) == 3
    assert {m[2] for m in skipped} <= {str(f), str(d / "ants" / "empty.jpg"), str(d / "ants" / "notes.jpg")}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["train_images"] + summary["val_images"] == 7  # 10 files (1 photo cut short, 2 not images) - 3 skipped


# ------------------------------------------------------------------------------------------------ odd but valid images
def _odd_images(src: Path, dst: Path) -> dict[str, Path]:
    """One real photo saved in every odd-but-valid form."""
    dst.mkdir(parents=True)
    with Image.open(src) as im:
        rgb = im.convert("RGB").resize((48, 36))
    a = np.asarray(rgb)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (36, 1))))
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # 16 bits per pixel: mode I;16
    forms = {
        "anim.gif": lambda p: rgb.quantize(64).save(p, save_all=True, append_images=[rgb.rotate(90).quantize(64)], duration=50),
        "photo.webp": lambda p: rgb.save(p, "WEBP"),
        "cmyk.jpg": lambda p: rgb.convert("CMYK").save(p, "JPEG"),
        "alpha.png": lambda p: rgba.save(p),
        "deep.png": lambda p: grey16.save(p),
        "grey.jpg": lambda p: rgb.convert("L").save(p, "JPEG"),
        "dot.png": lambda p: Image.fromarray(a[:1, :1]).save(p),
        "palette.png": lambda p: rgb.quantize(16).save(p, transparency=0),
    }
    out = {}
    for name, save in forms.items():
        save(dst / name)
        out[name] = dst / name
    return out


def test_odd_but_valid_images_are_accepted_and_converted(tmp_path, hymenoptera):
    root = tmp_path / "odd"
    files = {}
    for c in ("ants", "bees"):
        src = sorted((hymenoptera / "train" / c).glob("*.jpg"))[0]
        files.update({f"{c}/{k}": v for k, v in _odd_images(src, root / c).items()})
    modes = {k: Image.open(v).mode for k, v in files.items()}
    assert {modes["ants/cmyk.jpg"], modes["ants/alpha.png"], modes["ants/deep.png"], modes["ants/grey.jpg"]} == {"CMYK", "RGBA", "I;16", "L"}
    for k, v in files.items():
        img = open_image(v)
        assert img.mode == "RGB", k
    assert open_image(files["ants/dot.png"]).size == (1, 1)
    deep = np.asarray(open_image(files["ants/deep.png"]))[..., 0].astype(int)
    grey = np.asarray(Image.open(files["ants/deep.png"]), dtype=np.int64) // 257
    assert np.abs(deep - grey).max() <= 1  # 16-bit scaled to 8 bits, not clipped to white

    r = cli("train", root, *FAST, "--out", tmp_path / "out", "-q")
    assert r.code == 0, r.err
    assert r.err == ""  # no warning: nothing was skipped
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["train_images"] + summary["val_images"] == len(files) == 16
    assert summary["classes"] == ["ants", "bees"]


def test_the_cli_leaves_logging_as_it_found_it(caplog):
    """Repeated in-process calls neither stack `warning:` handlers nor hide library warnings from other handlers."""
    logger = logging.getLogger("warmstart")
    before = (list(logger.handlers), logger.level, logger.propagate)
    for _ in range(2):
        assert cli("train", "digts").code == 2
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    with caplog.at_level("WARNING", logger="warmstart.data"):
        logging.getLogger("warmstart.data").warning("still seen")
    assert [r.getMessage() for r in caplog.records] == ["still seen"]
