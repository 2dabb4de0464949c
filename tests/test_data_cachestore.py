"""The cache folder as a whole (`warmstart cache`, ws.cache): list, prune, clear, the size cap with least recently
used eviction, leases (an entry being read is never removed), builds racing, and leftovers of killed runs."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import warmstart as ws
from warmstart.data import ImageDataset, Preprocess, load_data
from warmstart.data import cachestore, diskcache
from warmstart.sizes import human_size, parse_size
from warmstart.errors import UserError

HOUR = 3600.0
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def val8(hymenoptera):
    return load_data(hymenoptera, subset=8).val  # 16 real photos


def _build(src, resize: int, folder: Path) -> ImageDataset:
    return ImageDataset(src, Preprocess(resize=resize, crop=resize - 8), cache_dir=folder)


def _entries(folder: Path) -> dict[str, cachestore.Entry]:
    return {e.paths[0].name: e for e in cachestore.entries(folder)}


def _age(ds: ImageDataset, hours: float) -> str:
    """Set the entry's last use ``hours`` ago; its file name."""
    t = time.time() - hours * HOUR
    os.utime(ds.cache_path.with_suffix(".json"), (t, t))
    return ds.cache_path.name


def _free(*datasets) -> None:
    """Drop the datasets and their readers (which hold the entries' shared locks)."""
    for ds in datasets:
        ds._images = None
    gc.collect()


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def _env(folder: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "WARMSTART_CACHE_DIR": str(folder), "OMP_NUM_THREADS": "1"}


def test_human_sizes_are_read_and_written_one_way():
    assert parse_size("20G") == 20 * 2**30 and parse_size("500M") == 500 * 2**20 and parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("20GB") == 20 * 10**9 and parse_size("123") == 123 and parse_size(" 2 k ") == 2048
    assert parse_size("none") is None and parse_size("0") == 0
    with pytest.raises(UserError, match="not a size"):
        parse_size("20X")
    assert human_size(1000) == "1000 B" and human_size(48 * 2**20) == "48.0 MiB"
    assert human_size(60000 * 3 * 256 * 256) == "11.0 GiB"  # CIFAR-10 decoded at 256 px
    assert human_size(parse_size("20G")) == "20.0 GiB"


def test_list_names_kind_data_set_size_and_last_use(val8, tmp_path, capsys):
    from _cli import run_cli

    folder = tmp_path / "cache"
    ds = _build(val8, 32, folder)
    (folder / "downloads" / "cifar10").mkdir(parents=True)
    (folder / "downloads" / "cifar10" / "part.bin").write_bytes(b"x" * 5000)
    report = ws.cache(cache_dir=folder)
    kinds = sorted((e.kind, e.name) for e in report.entries)
    assert kinds == [("decoded images", "hymenoptera_data"), ("download", "cifar10")]
    images = next(e for e in report.entries if e.kind == "decoded images")
    assert images.detail == "16 images at 32 px" and images.in_use  # ds reads it
    assert images.size >= ds.cache_path.stat().st_size and report.total == sum(e.size for e in report.entries)
    code, out, err = run_cli(["cache", "--cache-dir", folder], capsys)
    assert code == 0, err
    assert "decoded images" in out and "hymenoptera_data" in out and "downloads/cifar10" in out
    assert human_size(images.size) in out and "in use" in out
    code, out, _ = run_cli(["cache", "--cache-dir", folder, "--json"], capsys)
    assert code == 0 and len(json.loads(out)["entries"]) == 2


def test_the_cap_evicts_least_recently_used_first(val8, tmp_path, monkeypatch):
    monkeypatch.setenv("WARMSTART_CACHE_MAX", "none")
    folder = tmp_path / "cache"
    a, b, c, d = (_build(val8, r, folder) for r in (32, 40, 48, 56))
    names = [_age(ds, h) for ds, h in zip((a, b, c, d), (4, 3, 2, 1))]
    _free(a, b, c, d)
    again = _build(val8, 40, folder)  # reading b is a use: b is now the most recent
    assert again.cache_hit
    _free(again)
    size = {n: e.size for n, e in _entries(folder).items()}
    report = ws.cache(max_size=size[names[1]] + size[names[2]] + size[names[3]], cache_dir=folder)
    assert [e.paths[0].name for e in report.removed] == [names[0]]  # a: the least recently used
    report = ws.cache(max_size=size[names[1]], cache_dir=folder)
    assert [e.paths[0].name for e in report.removed] == [names[2], names[3]]  # c, then d; b (just read) stays
    assert set(_entries(folder)) == {names[1]}


def test_a_run_that_adds_an_entry_enforces_the_cap_but_never_on_an_entry_in_use(val8, tmp_path, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("WARMSTART_CACHE_MAX", "1")  # one byte: every entry not in use and not just written goes
    folder = tmp_path / "cache"
    first = _build(val8, 32, folder)
    fetched = folder / "downloads" / "mnist"  # the least recently used of all, but a download: never evicted
    fetched.mkdir(parents=True)
    (fetched / "train.bin").write_bytes(b"x" * 100)
    os.utime(fetched / "train.bin", (time.time() - 100 * HOUR,) * 2)
    with caplog.at_level(logging.WARNING, logger="warmstart.data"):
        second = _build(val8, 40, folder)  # first is being read: kept, and the folder stays over its cap
    assert first.cache_path.is_file() and second.cache_path.is_file()
    assert any("over its cap of 1 B" in r.getMessage() for r in caplog.records)
    expected = torch.stack([ImageDataset(val8, Preprocess(resize=32, crop=24), cache_dir=False)[i][0] for i in range(16)])
    assert torch.equal(torch.stack([first[i][0] for i in range(16)]), expected)  # the reader still reads valid data
    _free(first, second)
    third = _build(val8, 48, folder)
    assert set(_entries(folder)) == {third.cache_path.name, "mnist"}  # both older entries evicted, the new one kept
    assert not first.cache_path.exists() and not first.cache_path.with_suffix(".json").exists()


def test_a_reader_in_another_process_keeps_its_entry_and_reads_valid_data(val8, hymenoptera, tmp_path):
    folder = tmp_path / "cache"
    ds = _build(val8, 32, folder)
    _free(ds)
    reader = subprocess.Popen(_script(f"""
        import sys, hashlib
        from warmstart.data import ImageDataset, Preprocess, load_data
        src = load_data({str(hymenoptera)!r}, subset=8).val
        ds = ImageDataset(src, Preprocess(resize=32, crop=24), cache_dir={str(folder)!r})
        print(ds.cache_hit, flush=True)
        sys.stdin.readline()  # the test evicts meanwhile
        h = hashlib.sha256(b"".join(ds._images[i].numpy().tobytes() for i in range(len(ds._images))))
        print(h.hexdigest(), flush=True)
    """), env=_env(folder), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "True", reader.stderr.read()
        report = ws.cache(max_size=0, cache_dir=folder)  # evict everything that can go
        assert report.removed == [] and ds.cache_path.is_file()
        report = ws.cache("clear", cache_dir=folder)
        assert report.removed == [] and [e.paths[0] for e in report.kept_in_use] == [ds.cache_path]
        out, err = reader.communicate("go\n", timeout=120)
    finally:
        reader.kill()
    import hashlib

    memory = ImageDataset(val8, Preprocess(resize=32, crop=24), cache_dir=False)
    want = hashlib.sha256(b"".join(memory._images[i].numpy().tobytes() for i in range(16))).hexdigest()
    assert reader.returncode == 0, err
    assert out.strip() == want
    assert ws.cache("clear", cache_dir=folder).removed  # the reader is gone: now it can be removed
    assert not list(folder.glob("images-*"))


BUILD = """
    import os, sys, time, pathlib
    from warmstart.data import ImageDataset, Preprocess, load_data
    src = load_data({data!r}, subset=8).val
    go = pathlib.Path({go!r})
    while not go.exists():
        time.sleep(0.01)
    real = src.load
    def slow(*a, **k):  # decoding, slowly; with several builders, each waits until all have begun (they overlap)
        mark = go.with_name(f"building.{{os.getpid()}}")
        if not mark.exists():
            mark.touch()
            deadline = time.time() + 120
            while len(list(go.parent.glob("building.*"))) < {builders} and time.time() < deadline:
                time.sleep(0.01)
        time.sleep({delay})
        return real(*a, **k)
    src.load = slow
    ds = ImageDataset(src, Preprocess(resize=64, crop=56), cache_dir={folder!r}, workers=1)
    print(ds.cache_hit, ds.decoded_here, flush=True)
"""


def test_two_processes_filling_the_same_entry_both_finish_with_a_valid_cache(val8, hymenoptera, tmp_path):
    folder, go = tmp_path / "cache", tmp_path / "go"
    script = BUILD.format(data=str(hymenoptera), go=str(go), delay=0.05, folder=str(folder), builders=2)
    procs = [subprocess.Popen(_script(script), env=_env(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert [o.split() for o, _ in outs] == [["False", "16"], ["False", "16"]]  # both built it, at the same time
    assert len(list(folder.glob("images-*.npy"))) == 1 and len(list(folder.glob("images-*.json"))) == 1
    assert not list(folder.glob(".*tmp"))
    again = ImageDataset(val8, Preprocess(resize=64, crop=56), cache_dir=folder)
    memory = ImageDataset(val8, Preprocess(resize=64, crop=56), cache_dir=False)
    assert again.cache_hit and all(torch.equal(again[i][0], memory[i][0]) for i in range(16))


def test_a_build_killed_midway_leaves_a_temp_file_the_next_run_and_prune_remove(val8, hymenoptera, tmp_path, capsys):
    from _cli import run_cli

    folder, go = tmp_path / "cache", tmp_path / "go"
    go.touch()
    script = BUILD.format(data=str(hymenoptera), go=str(go), delay=1.0, folder=str(folder), builders=1)
    killed = subprocess.Popen(_script(script), env=_env(folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(folder.glob(".images-*.tmp")) and time.time() < deadline and killed.poll() is None:
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)  # kill -9 while building
    killed.wait()
    left = list(folder.glob(".images-*.tmp"))
    assert len(left) == 1 and f".{killed.pid}." in left[0].name
    listed = _entries(folder)[left[0].name]
    assert listed.kind == "other" and f"left by killed process {killed.pid}" in listed.detail
    # a build in progress (this process, alive, holding its lock) is not a leftover
    mine, at = diskcache.prepare_file(folder, "f" * 20, (1, 3, 8, 8))
    ImageDataset(val8, Preprocess(resize=40, crop=32), cache_dir=folder)  # the next run sweeps
    assert not left[0].exists() and mine.exists()
    diskcache.discard(mine)
    # prune too (the same leftover, made again)
    stale = folder / left[0].name
    stale.write_bytes(b"\0" * 4096)
    code, out, err = run_cli(["cache", "prune", "--older-than", "30", "--cache-dir", folder], capsys)
    assert code == 0, err
    assert not stale.exists() and "pruned: 1 entry" in out


def test_prune_removes_what_was_not_used_for_days(val8, tmp_path, capsys):
    from _cli import run_cli

    folder = tmp_path / "cache"
    old, new = _build(val8, 32, folder), _build(val8, 40, folder)
    old_name, new_name = _age(old, 10 * 24), _age(new, 1)
    _free(old, new)
    dl = folder / "downloads" / "mnist"
    dl.mkdir(parents=True)
    (dl / "train.bin").write_bytes(b"x" * 100)
    t = time.time() - 40 * 24 * HOUR
    os.utime(dl / "train.bin", (t, t))
    report = ws.cache("prune", older_than=7, kind="images", cache_dir=folder)
    assert [e.paths[0].name for e in report.removed] == [old_name] and dl.is_dir()  # only images asked for
    code, out, err = run_cli(["cache", "prune", "--older-than", "7", "--cache-dir", folder], capsys)
    assert code == 0, err
    assert not dl.exists() and set(_entries(folder)) == {new_name}
    with pytest.raises(UserError, match="--older-than"):
        ws.cache("prune", cache_dir=folder)


def test_clear_asks_or_needs_yes_without_a_terminal(val8, tmp_path, capsys):
    from _cli import run_cli

    folder = tmp_path / "cache"
    _free(_build(val8, 32, folder))
    done = subprocess.run([sys.executable, "-m", "warmstart", "cache", "clear", "--cache-dir", str(folder)],
                          env=_env(folder), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "add --yes" in done.stderr
    assert len(_entries(folder)) == 1  # nothing removed
    code, out, err = run_cli(["cache", "clear", "--yes", "--cache-dir", folder], capsys)
    assert code == 0, err
    assert "cleared: 1 entry" in out and _entries(folder) == {}
    code, _, err = run_cli(["cache", "--max-size", "20Q", "--cache-dir", folder], capsys)
    assert code == 2 and err.startswith("error: ") and "not a size" in err


def test_warmstart_cache_imports_no_torch(tmp_path):
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "warmstart", "cache", "--cache-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "0 entries" in p.stdout, p.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")]
    assert "warmstart.data.cachestore" in imported
    assert not [m for m in imported if m.split(".")[0] in ("torch", "torchvision", "numpy")]
