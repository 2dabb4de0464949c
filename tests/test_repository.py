"""The repository itself must work on a new machine: nothing tracked points at one developer's machine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import data_root_problem

REPO = Path(__file__).resolve().parents[1]
#: an absolute path into a developer's machine: these folders exist there and nowhere else
MACHINE_PATH = re.compile(r"(^|[^A-Za-z0-9_.~$}])/(" + "|".join(("work", "root", "home", "tmp")) + r")/")


def _git(*args: str) -> str:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_nothing_tracked_is_a_symlink():
    links = [line.split("\t", 1)[1] for line in _git("ls-files", "-s").splitlines() if line.startswith("120000 ")]
    assert links == [], f"tracked symlinks dangle on another machine: {links}; git rm --cached them"


def test_no_tracked_file_names_an_absolute_path_of_a_machine():
    found = []
    for name in _git("ls-files", "-z").split("\0"):
        path = REPO / name
        if not name or name.endswith(".md") or not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary files
        for i, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{name}:{i}: {line.strip()[:120]}")
    assert found == [], "absolute paths of one machine in tracked files (use paths relative to the repository, " \
                        "options or environment variables):\n" + "\n".join(found)


def test_the_guard_catches_what_it_should():
    assert MACHINE_PATH.search('DATA = "' + "/" + 'work/data"')
    assert MACHINE_PATH.search("cp " + "/" + "tmp/x .")
    assert not MACHINE_PATH.search("../shared/weights/x.pth")
    assert not MACHINE_PATH.search("runs/demo/tmp/x")  # a relative folder called tmp is fine


def test_a_dangling_data_link_is_explained(tmp_path):
    link = tmp_path / ".data"
    link.symlink_to(tmp_path / "nowhere")
    assert "does not exist on this machine; delete the link (rm" in data_root_problem(link)
    link.unlink()
    link.write_text("")
    assert "is a file, not a folder" in data_root_problem(link)
    link.unlink()
    link.mkdir()
    assert data_root_problem(link) is None
