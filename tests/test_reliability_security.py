"""Files crafted to run code when unpickled are refused, through the real CLI, and the payload never runs.

The payload touches a marker file. Each test first proves the payload is live (an unrestricted
``torch.load``/``pickle.load`` does create the marker), then hands the file to warmstart.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from _reliability import FAST, cli, image_folder, tree


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


#: the first global torch's weights-only unpickler refuses: the payload itself in a torch.save archive; in a bare
#: pickle, the tensors around it already (plain pickle stores them through a torch function it does not allow)
CALLS = {"torch.save": "posix.system", "pickle": "torch.storage._load_from_bytes"}


def craft(path: Path, obj, fmt: str) -> None:
    if fmt == "torch.save":   # a zip archive, like every real .pth
        torch.save(obj, path)
    else:                     # a bare pickle (protocol 2: what old torch versions wrote)
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)


def assert_live(path: Path, marker: Path, fmt: str) -> None:
    """The crafted file does run its payload when loaded without restrictions (so the test can fail)."""
    assert not marker.exists()
    if fmt == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists(), "the payload did not run: the test would prove nothing"
    marker.unlink()


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_malicious_weights_file_is_refused_and_does_not_run(fmt, tmp_path, hymenoptera, weights_dir):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    real = torch.load(weights_dir / "mobilenet_v3_small-imagenet.pth", weights_only=True)
    craft(evil, {**real, "classifier.3.bias": Payload(marker)}, fmt)  # real tensors, one poisoned entry
    shutil.copy(weights_dir / "mobilenet_v3_small-imagenet.json", evil.with_suffix(".json"))  # gets as far as loading
    assert_live(evil, marker, fmt)

    data = image_folder(tmp_path / "d", hymenoptera, 3)
    r = cli("train", data, "--model", "mobilenet_v3_small", "--weights", evil, "--strategy", "transfer", "--epochs", "1",
            "--device", "cpu", "--out", tmp_path / "out", "-q")
    assert r.code == 2
    assert r.error.startswith(f"error: refusing to load weights file {evil}: not plain tensors, it would run code when unpickled (")
    assert r.error.endswith("save the weights with torch.save(model.state_dict(), path) or as .safetensors")
    assert f"(it calls or imports {CALLS[fmt]})" in r.error
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
def test_malicious_checkpoint_is_refused_on_resume_and_does_not_run(fmt, tmp_path, hymenoptera):
    data = image_folder(tmp_path / "d", hymenoptera, 3)
    run = tmp_path / "run"
    assert cli("train", data, *FAST, "--epochs", "2", "--out", run, "-q").code == 0
    marker = tmp_path / "pwned"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["history"] = state["history"][:1] + [Payload(marker)]  # a checkpoint that looks like epoch 2 of 2
    craft(run / "checkpoint.pt", state, fmt)
    assert_live(run / "checkpoint.pt", marker, fmt)
    before = tree(run)

    r = cli("train", data, "--resume", run, "-q")
    assert r.code == 2
    assert r.error == (f"error: refusing to load checkpoint {run / 'checkpoint.pt'}: not plain tensors, it would run code "
                       f"when unpickled (it calls or imports {CALLS[fmt]}); only load files you trust with other tools")
    assert not marker.exists(), "the payload ran"
    assert tree(run) == before  # the refused run directory is left exactly as it was
