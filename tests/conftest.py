"""Shared fixtures: the real data sets from ../shared, unpacked once into .data/ (or $WARMSTART_DATA)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WARMSTART_SHARED", REPO.parent / "shared"))


def data_root_problem(root: Path) -> str | None:
    """Why ``root`` cannot hold the unpacked data (a dangling or foreign link, a file), or None when it can."""
    if root.is_symlink() and not root.exists():
        return (f"{root} is a link to {os.readlink(root)}, which does not exist on this machine; "
                f"delete the link (rm {root}) and rerun: the tests unpack the data there themselves")
    if root.exists() and not root.is_dir():
        return f"{root} is a file, not a folder; delete it (rm {root}) and rerun: the tests unpack the data there"
    return None


def _data_root() -> Path:
    root = Path(os.environ.get("WARMSTART_DATA", REPO / ".data"))
    problem = data_root_problem(root)
    if problem:
        pytest.exit(f"error: {problem}", returncode=2)
    if not (root / "hymenoptera_data").is_dir() or not (root / "cifar10").is_dir():
        tool = SHARED / "tools" / "unpack-data"
        if not tool.exists():
            pytest.skip(f"no unpacked data in {root} and no {tool} to unpack it")
        done = subprocess.run([str(tool), str(root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            pytest.exit(f"error: {tool} {root} failed ({last}); fix that, or unpack the data yourself "
                        f"and point WARMSTART_DATA at it", returncode=2)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _data_root()


@pytest.fixture(scope="session")
def hymenoptera(data_root) -> Path:
    return data_root / "hymenoptera_data"


@pytest.fixture(scope="session")
def cifar10(data_root) -> Path:
    return data_root / "cifar10"


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    d = SHARED / "weights"
    if not d.is_dir():
        pytest.skip(f"no pretrained weights at {d}")
    return d


@pytest.fixture
def single_thread():
    """Torch on one thread for many small tensor ops: on a shared 2-core machine extra intra-op threads only
    spin (up to 10x slower). Restores the thread count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



@pytest.fixture(scope="session")
def digits_flat() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (offline), standardised per pixel and shuffled, as (N, 64) and labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))  # the file is sorted by writer
    return x[order], torch.tensor(y)[order]


@pytest.fixture(scope="session")
def v3_weights(weights_dir):
    """The shared ImageNet MobileNetV3-Small weights, resolved with their preprocessing."""
    from warmstart.transfer.weights import resolve_weights

    return resolve_weights(str(weights_dir / "mobilenet_v3_small-imagenet.pth"), "mobilenet_v3_small")


@pytest.fixture(scope="session", autouse=True)
def _decoded_image_cache(tmp_path_factory):
    """The decoded-image disk cache of every test (and the processes tests start) in a temporary folder, not the
    user's ~/.cache. Shared by the session: a data view decoded by one test is read back by the next."""
    before = os.environ.get("WARMSTART_CACHE_DIR")
    os.environ["WARMSTART_CACHE_DIR"] = str(tmp_path_factory.mktemp("decoded-image-cache"))
    yield
    if before is None:
        os.environ.pop("WARMSTART_CACHE_DIR", None)
    else:
        os.environ["WARMSTART_CACHE_DIR"] = before
