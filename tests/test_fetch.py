"""Data and weights by name (warmstart.data.fetch): from a mirror folder, from an HTTP server on 127.0.0.1 (the
base URL overridden), from the download cache; and one `error:` line, with nothing left behind, when none has it.

The server is Python's http.server in a thread, bound to 127.0.0.1 only, serving the repository's ../shared
(the real archives and weights, checked against their real sha256) or archives the test builds from tiny images.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from _cli import run_cli
from _serve import Handler as _Handler, closed_port, serve
from warmstart.data import fetch
from warmstart.data.loading import load_data
from warmstart.errors import UserError

HYMENOPTERA_FILES = 398  # train 124 ants + 121 bees, val 70 + 83 (shared/README.md)


@pytest.fixture
def shared(weights_dir) -> Path:
    return weights_dir.parent


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No mirror, no base URL, no offline switch from the caller's environment; a fresh data root and cache."""
    for name in (fetch.MIRROR_ENV, fetch.BASE_URL_ENV, fetch.OFFLINE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(fetch.DATA_ROOT_ENV, str(tmp_path / "root"))
    monkeypatch.setenv("WARMSTART_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def _files(folder: Path) -> int:
    """Files in ``folder``, not counting hidden ones (fetch's stamp)."""
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or ".unpack-" in p.name or ".download-" in p.name)


def test_fetch_from_the_loopback_server_then_from_the_cache(shared, env, tmp_path, capsys, hymenoptera):
    with serve(shared) as (url, seen):
        env.setenv(fetch.BASE_URL_ENV, url)
        code, out, err = run_cli(["fetch", "hymenoptera"], capsys)
    assert code == 0, err
    folder = Path(out.strip())
    assert folder == tmp_path / "root" / "hymenoptera_data"
    assert seen == ["/data/hymenoptera_data.tar"]
    assert _files(folder) == HYMENOPTERA_FILES
    assert (folder / fetch.STAMP).read_text().split() == [fetch.DATASETS["hymenoptera"].mirror_sha256,
                                                          "hymenoptera_data.tar"]
    assert _leftovers(tmp_path / "root") == []
    # the server is gone: the second fetch, and the name as DATA, are served by the download cache
    assert fetch.fetch("hymenoptera") == folder
    by_name, by_path = load_data("hymenoptera"), load_data(hymenoptera)
    assert (len(by_name.train), len(by_name.val), by_name.classes) == (len(by_path.train), len(by_path.val), by_path.classes)
    assert by_name.source.startswith("hymenoptera: ")


def test_fetch_from_a_mirror_folder_needs_no_network(shared, env, tmp_path, capsys):
    import time

    from warmstart.data.cachestore import DOWNLOAD, entries

    env.setenv(fetch.BASE_URL_ENV, f"http://127.0.0.1:{closed_port()}")  # were it used, it would fail
    env.delenv(fetch.DATA_ROOT_ENV)  # the default data root: datasets/ in the cache folder
    before = time.time()
    code, out, err = run_cli(["fetch", "hymenoptera", "--mirror", shared], capsys)
    assert code == 0, err
    assert Path(out.strip()) == tmp_path / "cache" / "datasets" / "hymenoptera_data"
    assert _files(Path(out.strip())) == HYMENOPTERA_FILES
    assert "(mirror)" in err
    # `warmstart cache` lists it as a download used just now (its images keep the archive's dates, from 2023),
    # so `cache prune --older-than DAYS` does not remove a data set fetched today
    (entry,) = entries(tmp_path / "cache")
    assert (entry.kind, entry.name) == (DOWNLOAD, "hymenoptera_data") and entry.last_use >= before - 1
    # weights from the mirror are used where they are, after their checksum
    env.setenv(fetch.MIRROR_ENV, str(shared))
    code, out, err = run_cli(["fetch", "mobilenet_v3_small-imagenet"], capsys)
    assert (code, out.strip()) == (0, str(shared / "weights" / "mobilenet_v3_small-imagenet.pth")), err


def test_weights_by_name_from_the_loopback_server_load_as_weights(shared, env, tmp_path):
    from warmstart.transfer.weights import resolve_weights

    with serve(shared) as (url, seen):
        env.setenv(fetch.BASE_URL_ENV, url)
        path = fetch.fetch("mobilenet_v2-inat-bird")
    assert seen == ["/weights/mobilenet_v2-inat-bird.pth", "/weights/mobilenet_v2-inat-bird.json"]
    assert path == tmp_path / "cache" / "downloads" / "mobilenet_v2-inat-bird" / "mobilenet_v2-inat-bird.pth"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not the temporary file's 0600
    w = resolve_weights(str(path))
    assert (w.arch, w.num_classes) == ("mobilenet_v2", 965)
    assert fetch.fetch("mobilenet_v2-inat-bird") == path  # then from the cache, the server gone
    # `warmstart cache` lists it as a download (never evicted by the size cap)
    from warmstart.data.cachestore import DOWNLOAD, entries
    assert [(e.kind, e.name) for e in entries(tmp_path / "cache")] == [(DOWNLOAD, "mobilenet_v2-inat-bird")]


def test_offline_is_one_error_line_exit_2_and_nothing_written(env, tmp_path, capsys):
    env.setenv(fetch.BASE_URL_ENV, f"http://127.0.0.1:{closed_port()}")
    code, out, err = run_cli(["fetch", "hymenoptera"], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: hymenoptera: not in "), err
    assert "Connection refused" in err and "/data/hymenoptera_data.tar" in err and "WARMSTART_MIRROR" in err
    assert _leftovers(tmp_path) == [] and not (tmp_path / "root" / "hymenoptera_data").exists()
    # with $WARMSTART_OFFLINE nothing is even tried; weights without any source say where to put them
    env.setenv(fetch.OFFLINE_ENV, "1")
    code, _, err = run_cli(["fetch", "cifar10-jpeg"], capsys)
    assert code == 2 and "$WARMSTART_OFFLINE is set" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["fetch", "mobilenet_v3_small-imagenet"], capsys)
    assert code == 2 and "weights/mobilenet_v3_small-imagenet.pth" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["fetch", "hymenopterra"], capsys)
    assert code == 2 and 'did you mean "hymenoptera"' in err


# ------------------------------------------------------------------ the download itself, on made archives


def _tiny_zip(top: str, counts: dict[str, int]) -> bytes:
    """A zip of tiny PNGs: <top>/<folder>/<i>.png, counts[folder] of each (top "" puts the folders at the root)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for rel, n in counts.items():
            for i in range(n):
                img = io.BytesIO()
                Image.new("RGB", (8, 8), (40 * i % 256, 0, 200 if "b" in rel else 0)).save(img, "PNG")
                z.writestr(f"{top}/{rel}/{i}.png" if top else f"{rel}/{i}.png", img.getvalue())
    return buf.getvalue()


LAYOUT = {"train/a": 3, "train/b": 2, "val/a": 2, "val/b": 2}


@pytest.fixture
def tiny(env, monkeypatch):
    """A registry entry "tiny" whose home is on the test's server (no checksum known: the structure is the check)."""
    def register(url: str, url_sha256: str | None = None):
        entry = fetch.DataArchive("tiny", "tiny_data", "tiny.tar", "0" * 64, url, url_sha256, LAYOUT, "test")
        monkeypatch.setitem(fetch.DATASETS, "tiny", entry)
        return entry
    return register


def test_an_archive_from_its_home_is_checked_by_structure_and_unpacked_from_its_top_folder(tmp_path, tiny):
    site = tmp_path / "site"
    site.mkdir()
    (site / "tiny-main.zip").write_bytes(_tiny_zip("tiny-0123abc", LAYOUT))  # as GitHub names an archive's folder
    (site / "short.zip").write_bytes(_tiny_zip("", {**LAYOUT, "val/b": 1}))
    with serve(site) as (url, seen):
        tiny(f"{url}/tiny-main.zip")
        folder = fetch.fetch("tiny")
        assert folder == tmp_path / "root" / "tiny_data"
        assert fetch.layout_problems(folder, LAYOUT) == [] and _files(folder) == sum(LAYOUT.values())
        assert (folder / fetch.STAMP).read_text().split()[1] == "tiny-main.zip"
        # an archive one file short is refused whole: nothing unpacked, nothing left over
        tiny(f"{url}/short.zip")
        import shutil
        shutil.rmtree(folder)
        with pytest.raises(UserError, match=r"unpacked incompletely \(val/b/ holds 1 files, expected 2\)"):
            fetch.fetch("tiny")
        assert not folder.exists() and _leftovers(tmp_path / "root") == []
        # a missing file on the server is an HTTP 404: not retried
        tiny(f"{url}/nothing-here.zip")
        before = len(seen)
        with pytest.raises(UserError, match="HTTP 404"):
            fetch.fetch("tiny")
        assert len(seen) == before + 1


class _FlakyHandler(_Handler):
    """Drops the first request's connection mid-file (half the bytes, then close), serves the next ones."""
    dropped = 0

    def do_GET(self):
        if type(self).dropped == 0:
            type(self).dropped += 1
            data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


def test_a_dropped_transfer_is_retried_and_a_wrong_file_is_refused(tmp_path, tiny):
    import hashlib

    site = tmp_path / "site"
    site.mkdir()
    blob = _tiny_zip("tiny", LAYOUT)
    (site / "tiny.zip").write_bytes(blob)
    with serve(site, _FlakyHandler) as (url, seen):
        tiny(f"{url}/tiny.zip", hashlib.sha256(blob).hexdigest())
        assert fetch.fetch("tiny") == tmp_path / "root" / "tiny_data"
        assert seen == ["/tiny.zip", "/tiny.zip"]  # the half transfer, then the whole one
    # a server that always holds another file than the checksum says: 3 attempts, then one error, nothing kept
    import shutil
    shutil.rmtree(tmp_path / "root")
    with serve(site) as (url, seen):
        tiny(f"{url}/tiny.zip", "f" * 64)
        with pytest.raises(UserError, match=r"tiny: .*sha256 .* in 3 attempts"):
            fetch.fetch("tiny")
        assert len(seen) == fetch.RETRIES
    assert not (tmp_path / "root" / "tiny_data").exists() and _leftovers(tmp_path) == []


def test_a_damaged_mirror_archive_is_refused_before_unpacking(env, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "data").mkdir(parents=True)
    (mirror / "data" / "hymenoptera_data.tar").write_bytes(b"not the archive")
    with pytest.raises(UserError, match=r"hymenoptera: .*hymenoptera_data.tar in the mirror has sha256"):
        fetch.fetch("hymenoptera", mirror=mirror)
    assert not (tmp_path / "root").exists() or list((tmp_path / "root").iterdir()) == []
    with pytest.raises(UserError, match="mirror folder .* does not exist"):
        fetch.fetch("hymenoptera", mirror=tmp_path / "nowhere")


def test_mirror_weights_are_checked_before_use(env, tmp_path, weights_dir):
    mirror = tmp_path / "mirror"
    (mirror / "weights").mkdir(parents=True)
    pth = mirror / "weights" / "mobilenet_v2-imagenet.pth"
    pth.write_bytes((weights_dir / "mobilenet_v2-imagenet.pth").read_bytes())
    with pytest.raises(UserError, match=r"mobilenet_v2-imagenet\.json in the mirror is missing"):
        fetch.fetch("mobilenet_v2-imagenet", mirror=mirror)
    (mirror / "weights" / "mobilenet_v2-imagenet.json").write_text("{}")
    with pytest.raises(UserError, match=r"\.json in the mirror is damaged or another version \(sha256 "):
        fetch.fetch("mobilenet_v2-imagenet", mirror=mirror)
