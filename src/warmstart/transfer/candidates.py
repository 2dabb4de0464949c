"""``--candidates`` of ``warmstart rank``, checked without torch: the tokens, and whether they name pretrained
starts (weights files, folders of them, ``imagenet``, ``none``, networks of the model zoo by name:
``imagenet:ARCH``, ``timm:NAME``, ``none:ARCH``) or init schemes (``he``, ``xavier``, ...).

The CLI runs :func:`check_candidates` before anything heavy is imported, so a stray comma or a mixed list
answers at once; :mod:`warmstart.transfer.rank` and :mod:`warmstart.experiments.rank` then resolve them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from warmstart.data.named import is_path_like
from warmstart.errors import UserError, unknown

#: the suffixes of a weights file (a state dict, or safetensors), each with a sidecar .json
STATE_DICT_SUFFIXES = (".pth", ".pt")
SAFETENSORS_SUFFIX = ".safetensors"
#: candidates that are not files: the random-init floor and torchvision's ImageNet weights
SPECIAL = ("none", "imagenet")
#: zoo candidates by name: ``imagenet:ARCH`` (torchvision's default ImageNet weights of ARCH), ``timm:NAME`` (timm's
#: pretrained weights of NAME), ``none:ARCH`` (ARCH with random weights: the floor of that architecture)
ZOO_PREFIXES = ("imagenet:", "timm:", "none:")


def check_weights_file(spec: str) -> None:
    """``--weights`` other than none/imagenet or a network by name names a file that must exist; checked without torch, with the
    errors :func:`~warmstart.transfer.weights.resolve_weights` gives (it calls this)."""
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if spec.lower() in SPECIAL or path.exists() or zoo_candidate(spec) is not None:
        return
    if not is_path_like(spec):  # a keyword, misspelt
        raise UserError(str(unknown("weights", spec, list(SPECIAL)))
                        + "; or give the path of a .pth/.pt/.safetensors file with its sidecar .json, or a network by name "
                          "(imagenet:ARCH, timm:NAME, none:ARCH)")
    raise UserError(f"weights file not found: {path.absolute()}")


def sidecar_arch(spec: str) -> str | None:
    """The architecture a weights file's sidecar ``.json`` names; None for imagenet/none, a missing file or a
    sidecar without a readable ``arch`` (:func:`~warmstart.transfer.weights.read_sidecar` then says what is wrong)."""
    spec = str(spec).strip()
    path = Path(spec).expanduser()
    if spec.lower() in SPECIAL or not path.is_file():
        return None
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    arch = meta.get("arch") if isinstance(meta, dict) else None
    return arch if isinstance(arch, str) and arch else None


def model_for(model: str | None, weights: Sequence[str], *, given: bool) -> str | None:
    """The architecture to build: one reading of a weights file everywhere (train, compare, rank).

    A weights file's sidecar names its architecture, so ``--model`` is needed only without one (imagenet, none):
    ``--model`` left at its default (``given`` False) follows the sidecar; an explicitly given ``--model`` that
    differs from it is an error, as are files of different architectures in one run."""
    named = [(w, a) for w in weights if (a := _named_arch(w)) is not None]
    if not named:
        return model
    if given and model:
        for w, arch in named:
            if arch != model:
                what = f"--weights {w} is" if zoo_candidate(w) else f"weights file {w} is"
                said = "the name says so" if zoo_candidate(w) else f"its {Path(w).with_suffix('.json').name} says so"
                raise UserError(f'{what} for "{arch}" ({said}), not for --model "{model}"; drop --model (the sidecar names '
                                f"the architecture), or pass --model {arch} or other weights")
        return model
    archs = sorted({a for _, a in named})
    if len(archs) > 1:
        raise UserError(f"--weights: the files are for different architectures ({', '.join(f'{w}: {a}' for w, a in named)}); "
                        "one run trains one architecture: compare starts of one architecture")
    return archs[0]


def _named_arch(weights: str) -> str | None:
    """The architecture a ``--weights`` value names: a file's sidecar, or a zoo name (``imagenet:resnet18``)."""
    zoo = zoo_candidate(weights)
    return zoo[1] if zoo is not None else sidecar_arch(weights)


def split_candidates(text: str | Sequence[str]) -> list[str]:
    """``"a.pth,weights/,none"`` -> tokens (an empty token is an error)."""
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else [str(t) for t in text])]
    if not parts or any(not p for p in parts):
        raise UserError(f'--candidates "{text}": an empty candidate (a stray comma?); give weights files, folders, '
                        "imagenet, none or zoo names (imagenet:ARCH, timm:NAME), separated by commas")
    return parts


def zoo_candidate(t: str) -> tuple[str, str] | None:
    """``imagenet:resnet18`` -> ``("imagenet", "resnet18")``, ``timm:convnext_tiny`` -> ``("imagenet",
    "timm:convnext_tiny")``, ``none:resnet18`` -> ``("none", "resnet18")``: (the ``--weights`` kind, the
    architecture as ``--model`` writes it); None for any other token (a file, a folder, an init scheme)."""
    low = t.lower()
    prefix = next((p for p in ZOO_PREFIXES if low.startswith(p)), None)
    if prefix is None or "/" in t or "\\" in t or Path(t).exists():
        return None
    arch = t[len(prefix):].strip()
    if not arch or arch.endswith(":"):
        raise UserError(f"--candidates {t}: no architecture after '{prefix}'; write e.g. imagenet:resnet18, "
                        "timm:convnext_tiny or none:resnet18")
    if prefix == "timm:":
        return "imagenet", f"timm:{arch}"
    return prefix[:-1], arch


def is_init_token(t: str) -> bool:
    """A candidate that names an init scheme, not weights: not none/imagenet/a zoo name, no path, no weights suffix."""
    return (t.lower() not in SPECIAL and zoo_candidate(t) is None and "/" not in t and "\\" not in t
            and not Path(t).exists() and Path(t).suffix not in (*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX))


def check_candidates(candidates: str | Sequence[str], *, model: str | None = None) -> tuple[list[str], bool]:
    """The tokens, and True when they are init schemes; a mixed list, or init schemes without ``model``, is an error."""
    tokens = split_candidates(candidates)
    inits = [is_init_token(t) for t in tokens]
    if any(inits) and not all(inits):
        raise UserError(f"--candidates mixes init schemes ({', '.join(t for t, i in zip(tokens, inits) if i)}) with weights "
                        f"({', '.join(t for t, i in zip(tokens, inits) if not i)}); rank pretrained starts and random inits "
                        "in separate runs (or check the spelling of a weights file)")
    if all(inits) and not model:
        raise UserError("init schemes as candidates need --model ARCH, e.g. --model plain_mlp (the 30-layer net of "
                        "warmstart depth) or --model custom_3_layer")
    return tokens, all(inits)
