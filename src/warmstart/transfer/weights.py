"""Pretrained weights: where the tensors come from, plus the metadata that decides preprocessing.

Like a torchvision ``WeightsEnum`` entry, a :class:`Weights` carries everything that must travel with the
tensors: the architecture they belong to, the number of classes of their head (and the class names), and
the preprocessing they were trained with (input size, resize, interpolation, mean, std). Nothing else in
warmstart knows a mean or a std.

Three kinds, chosen by the ``--weights`` spec given to :func:`resolve_weights`:

``none``
    No pretrained tensors (training from scratch). The metadata still gives a sensible preprocessing for the
    architecture: torchvision's ``DEFAULT`` weights' ``transforms()`` (sizes, interpolation, ImageNet
    mean/std) when the architecture has pretrained weights, for timm models the model's pretrained config,
    otherwise resize 256 / crop 224 / bilinear with mean = std = 0.5 (inputs scaled to [-1, 1]).
``imagenet``
    torchvision's default ImageNet weights for the architecture
    (``torchvision.models.get_model_weights(arch).DEFAULT``): preprocessing from ``weights.transforms()``,
    class names from ``weights.meta["categories"]``. The file lives in the torch hub cache
    (``torch.hub.get_dir()/checkpoints/<file>``, i.e. ``$TORCH_HOME/hub/checkpoints``); it is downloaded
    there when missing and the network is reachable (checked against the hash prefix in its name); a file
    already in the cache is used as is, as torch.hub does. Offline (``WARMSTART_OFFLINE=1`` or no network) a
    missing file is a :class:`UserError` that names the exact path to put it at.
``PATH``
    A ``.pth``/``.pt`` state_dict (or a warmstart checkpoint dict whose ``"model"`` key holds one) or a
    ``.safetensors`` file, with a sidecar JSON of the same stem (``foo.pth`` -> ``foo.json``) in the format
    of ``shared/weights/*.json``: ``arch``, ``num_classes``, ``input_size``, ``resize``, ``mean``, ``std``,
    optionally ``interpolation``, ``categories`` and ``model_kwargs`` (extra keyword arguments for the
    torchvision model builder). :func:`save_weights` writes this format.

Loading never unpickles code: ``.pth`` files are read with ``torch.load(..., weights_only=True)``, which
refuses any pickle that would construct arbitrary objects; ``.safetensors`` holds raw tensors only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlparse

import torch

from warmstart.data.fetch import sha256_file
from warmstart.data.transforms import Preprocess
from warmstart.engine.checkpoint import safe_torch_load
from warmstart.engine.io import atomic_path, write_text
from warmstart.errors import UserError, unknown
from warmstart.transfer.candidates import SAFETENSORS_SUFFIX, STATE_DICT_SUFFIXES, check_weights_file  # noqa: F401  (re-exported)
from warmstart.transfer.candidates import zoo_candidate

WeightsKind = Literal["imagenet", "file", "none"]

TIMM_PREFIX = "timm:"
REQUIRED_META = ("arch", "num_classes", "input_size", "resize", "mean", "std")
#: Preprocessing for an architecture nobody publishes weights for: inputs scaled to [-1, 1].
FALLBACK_META: dict[str, Any] = {"input_size": 224, "resize": 256, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
OFFLINE_ENV = "WARMSTART_OFFLINE"


@dataclass
class Weights:
    """Pretrained tensors (or none) plus their metadata.

    ``meta`` holds at least ``input_size``, ``resize``, ``interpolation``, ``mean`` and ``std``; with
    tensors also ``num_classes`` and usually ``categories``. ``path`` is the local file for ``file`` and
    ``imagenet`` weights, ``None`` for ``none``.
    """

    arch: str | None
    kind: WeightsKind
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    @property
    def where(self) -> str:
        """Where these weights come from, for messages."""
        if self.kind == "file":
            return str(self.path)
        if self.kind == "imagenet":
            src = str(self.meta.get("source", f"ImageNet weights of {self.arch}"))
            return f"{src} ({self.path})" if self.path is not None else src
        return f"no pretrained weights ({self.arch})"

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_meta(self.meta, where=self.where)

    @property
    def categories(self) -> list[str] | None:
        cats = self.meta.get("categories")
        return list(cats) if cats is not None else None

    @property
    def num_classes(self) -> int | None:
        """Classes of the pretrained head (``None`` without pretrained tensors)."""
        n = self.meta.get("num_classes")
        return int(n) if n is not None and self.pretrained else None

    @cached_property
    def fingerprint(self) -> str:
        """A sha256 hex digest that identifies the tensors.

        ``file``: the file's bytes (hashed once per instance). ``imagenet``: torchvision's weights name and
        URL (the URL embeds a hash prefix of the file, so this is exact without reading hundreds of MB).
        ``none``: the architecture only — random weights depend on the seed, so a cache of features computed
        from random weights must also key on the seed.
        """
        if self.kind == "file":
            assert self.path is not None
            return sha256_file(self.path)
        if self.kind == "imagenet":
            ident = f"imagenet:{self.meta.get('source', '')}:{self.meta.get('url', '')}"
        else:
            ident = f"none:{self.arch}"
        return hashlib.sha256(ident.encode()).hexdigest()

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        """The pretrained tensors on the CPU, keyed like ``model.state_dict()`` (empty for ``none``)."""
        if self.kind == "none":
            return {}
        if self.path is None:  # timm ImageNet weights: timm fetches them itself
            return _timm_pretrained_state_dict(self.arch or "")
        sd = load_tensors(self.path)
        if self.arch and _tv_name(self.arch).startswith("densenet"):
            sd = _densenet_legacy_keys(sd)
        return sd


# --------------------------------------------------------------------------------------------- resolve


def resolve_weights(spec: str, arch: str | None = None, *, offline: bool | None = None) -> Weights:
    """Turn a ``--weights`` spec (``none``, ``imagenet``, a network by name — ``imagenet:ARCH``, ``timm:NAME``,
    ``none:ARCH`` — or a file path) into :class:`Weights`.

    ``arch`` is the requested architecture (a torchvision name such as ``mobilenet_v3_small``, or
    ``timm:<name>``). It is required for ``none`` and ``imagenet``; for a file it defaults to the arch in
    the sidecar JSON and must agree with it when given. ``offline`` (default: ``$WARMSTART_OFFLINE`` is set
    to a non-empty value other than ``0``) forbids downloading ImageNet weights.
    """
    spec = str(spec).strip()
    low = spec.lower()
    zoo = zoo_candidate(spec)
    if zoo is not None:  # imagenet:ARCH, timm:NAME, none:ARCH: the name says the architecture too
        kind, named = zoo
        if arch is not None and arch != named:
            raise UserError(f'--weights {spec} is for "{named}", not for --model "{arch}"; drop --model (the name says the '
                            f"architecture) or pass --model {named}")
        return resolve_weights(kind, named, offline=offline)
    if low in ("none", "imagenet"):
        if not arch:
            raise UserError(f'--weights {low} needs an architecture (e.g. --model mobilenet_v3_small)')
        check_arch(arch)
        if arch.startswith(TIMM_PREFIX):
            return _resolve_timm(low, arch)
        if low == "none":
            return Weights(arch=arch, kind="none", path=None, meta=_default_meta(arch))
        return _resolve_imagenet(arch, offline=_offline() if offline is None else offline)

    check_weights_file(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise UserError(f"--weights {path} is a folder; give a .pth, .pt or .safetensors file (with its .json)")
    if path.suffix not in (*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX):
        raise UserError(f"weights file {path}: unsupported type {path.suffix!r}; use .pth, .pt or .safetensors")
    meta = read_sidecar(path)
    if arch is not None:
        check_arch(arch)
        if meta["arch"] != arch:
            raise UserError(
                f'weights file {path} is for "{meta["arch"]}" (its {path.with_suffix(".json").name} says so), '
                f'not for the requested architecture "{arch}"; pass --model {meta["arch"]} or other weights'
            )
    return Weights(arch=meta["arch"], kind="file", path=path.absolute(), meta=meta)


def check_arch(arch: str) -> None:
    """Raise a UserError (with did-you-mean) for an architecture torchvision does not have."""
    if arch.startswith(TIMM_PREFIX) or arch in own_models():
        return
    names = torchvision_archs() + sorted(own_models())
    if arch not in names:
        raise UserError(str(unknown("architecture", arch, names)) + "; timm models are written timm:<name>")


def torchvision_archs() -> list[str]:
    """Every torchvision image-classification architecture name."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def read_sidecar(path: Path) -> dict[str, Any]:
    """Read and validate the sidecar JSON of a weights file (same stem, ``.json``)."""
    js = path.with_suffix(".json")
    fmt = "see shared/weights/*.json for the format"
    if not js.is_file():
        raise UserError(
            f"weights file {path} needs its metadata next to it in {js} "
            f"(keys: {', '.join(REQUIRED_META)}, optional interpolation, categories); {fmt}"
        )
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{js}: not valid JSON ({e}); {fmt}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{js}: expected a JSON object, got {type(meta).__name__}; {fmt}")
    for key in REQUIRED_META:
        if key not in meta:
            raise UserError(f'{js}: missing key "{key}" (needs {", ".join(REQUIRED_META)}); {fmt}')
    if not isinstance(meta["arch"], str) or not meta["arch"]:
        raise UserError(f'{js}: "arch" must be an architecture name such as "mobilenet_v3_small"')
    n = meta["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UserError(f'{js}: "num_classes" must be a positive integer, got {n!r}')
    cats = meta.get("categories")
    if cats is not None and (not isinstance(cats, list) or len(cats) != n or not all(isinstance(c, str) for c in cats)):
        raise UserError(f'{js}: "categories" must be a list of {n} class names (num_classes), got {_describe(cats)}')
    if not isinstance(meta.get("model_kwargs", {}), dict):
        raise UserError(f'{js}: "model_kwargs" must be an object of builder keyword arguments')
    Preprocess.from_meta(meta, where=str(js))  # validates sizes, mean and std with a clear message
    return meta


def _describe(v: Any) -> str:
    return f"{len(v)} entries" if isinstance(v, list) else repr(v)[:60]


# --------------------------------------------------------------------------------------------- loading


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.pth``/``.pt`` (never running pickled code) or ``.safetensors``.

    Accepts a plain state_dict, a checkpoint dict whose ``"model"`` key holds the state_dict, and a state
    dict saved from a ``DistributedDataParallel``/``torch.compile`` wrapper (``module.``/``_orig_mod.``
    prefixes are stripped).
    """
    path = Path(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"cannot read safetensors file {path}: {e}") from None
    else:
        obj = safe_torch_load(path, what="weights file",
                              todo="save the weights with torch.save(model.state_dict(), path) or as .safetensors",
                              damaged="the file is damaged or not a PyTorch weights file")
    obj = _state_dict_in(obj)
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f'{path}: expected a state_dict of tensors, but entry "{bad[0]}" is not a tensor')
    sd = dict(obj)
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


#: where checkpoint dicts keep their state_dict (warmstart's own, Lightning-style, and common scripts)
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict")


def _state_dict_in(obj: Any) -> Any:
    """The state_dict inside a checkpoint dict (under one of STATE_DICT_KEYS, nested), else ``obj`` itself."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def save_weights(path: str | Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` to ``path`` (``.pth``/``.pt`` or ``.safetensors``) plus its sidecar ``.json``.

    ``meta`` must hold the keys :func:`read_sidecar` requires (``Weights.meta`` of the source weights, with
    ``num_classes``/``categories`` updated for a new head). Both files are written to temporary names and
    renamed, so a reader never sees half a file. Returns the weights path.
    """
    path = Path(path)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"save_weights: meta lacks {missing}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import save_file

        with atomic_path(path, "weights") as tmp:
            save_file(_unshare(tensors), str(tmp))
    elif path.suffix in STATE_DICT_SUFFIXES:
        with atomic_path(path, "weights") as tmp:
            torch.save(tensors, tmp)
    else:
        raise ValueError(f"save_weights: unsupported suffix {path.suffix!r}")
    js = json.dumps(dict(meta), indent=1)
    write_text(path.with_suffix(".json"), js, "weights metadata")
    return path


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): give each its own storage."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out



_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _densenet_legacy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's DenseNet files use 'norm.1'-style keys; rename them as torchvision's builder does."""
    out = {}
    for k, v in sd.items():
        m = _DENSENET_LEGACY.match(k)
        out[m.group(1) + m.group(2) if m else k] = v
    return out


def _tv_name(arch: str) -> str:
    return arch[len(TIMM_PREFIX):] if arch.startswith(TIMM_PREFIX) else arch


# --------------------------------------------------------------------------------------------- torchvision


def offline() -> bool:
    """Whether downloads are forbidden (``$WARMSTART_OFFLINE`` set to a non-empty value other than 0/false/no)."""
    return _offline()


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _tv_default_weights(arch: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _meta_from_tv(arch: str, w) -> dict[str, Any]:
    """Preprocessing and class names from a torchvision WeightsEnum entry."""
    t = w.transforms()
    interp = getattr(t, "interpolation", None)
    meta: dict[str, Any] = {
        "arch": arch,
        "input_size": int(t.crop_size[0]),
        "resize": int(t.resize_size[0]),
        "interpolation": getattr(interp, "value", str(interp or "bilinear")),
        "mean": [float(v) for v in t.mean],
        "std": [float(v) for v in t.std],
    }
    if arch in ("googlenet", "inception_v3"):
        # As torchvision's builder does for these weights: they expect its transform_input re-normalisation.
        meta["model_kwargs"] = {"transform_input": True, "init_weights": False}
    return meta


def own_models() -> dict:
    """warmstart's own small models (warmstart.models.MODELS), by name."""
    from warmstart.models import MODELS

    return MODELS


def _default_meta(arch: str) -> dict[str, Any]:
    if arch in own_models():
        return {"arch": arch, **own_models()[arch].meta, "source": f"preprocessing of warmstart's {arch} (no tensors)"}
    w = _tv_default_weights(arch)
    if w is None:
        return {"arch": arch, **FALLBACK_META, "source": "fallback preprocessing (no torchvision weights)"}
    meta = _meta_from_tv(arch, w)
    meta.pop("model_kwargs", None)  # scratch models are built with the builder's own defaults
    meta["source"] = f"preprocessing of torchvision {type(w).__name__}.{w.name} (no tensors)"
    return meta


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub caches the file of ``url``: ``torch.hub.get_dir()/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_checkpoint(arch: str) -> tuple[str, Path] | None:
    """torchvision's default ImageNet weights of ``arch``: (their URL, where the torch hub cache keeps the file, which
    ``--weights imagenet`` uses as is when it is there); None when torchvision has none for ``arch``."""
    w = _tv_default_weights(arch)
    return None if w is None else (w.url, hub_checkpoint_path(w.url))


def _resolve_imagenet(arch: str, *, offline: bool) -> Weights:
    w = _tv_default_weights(arch)
    if w is None:
        raise UserError(f'torchvision has no ImageNet weights for "{arch}"; use --weights none or a file')
    meta = _meta_from_tv(arch, w)
    meta["num_classes"] = len(w.meta["categories"])
    meta["categories"] = list(w.meta["categories"])
    meta["source"] = f"torchvision {type(w).__name__}.{w.name}"
    meta["url"] = w.url
    path = hub_checkpoint_path(w.url)
    if not path.is_file():
        _download(w.url, path, arch, offline=offline)
    return Weights(arch=arch, kind="imagenet", path=path, meta=meta)


def _download(url: str, path: Path, arch: str, *, offline: bool) -> None:
    todo = (
        f"download {url} and put it at {path} (the torch hub cache, $TORCH_HOME/hub/checkpoints), "
        "or pass --weights PATH to a .pth/.safetensors file with its sidecar .json"
    )
    if offline:
        raise UserError(f"ImageNet weights for {arch} are not in the torch hub cache and {OFFLINE_ENV} is set: {todo}")
    m = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=m.group(1) if m else None, progress=True)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; RuntimeError: bad hash
        raise UserError(f"ImageNet weights for {arch} are not cached and could not be downloaded ({e}): {todo}") from None


# --------------------------------------------------------------------------------------------- timm (optional)


def import_timm():
    """Import timm, or tell the user how to install it."""
    try:
        import timm  # noqa: F401
    except ImportError:
        raise UserError("timm models need the optional timm package: pip install 'warmstart[timm]'") from None
    return timm


def _resolve_timm(kind: str, arch: str) -> Weights:
    """timm weights: preprocessing from the model's pretrained config; tensors fetched by timm itself."""
    timm = import_timm()
    name = _tv_name(arch)
    if not timm.is_model(name):
        raise UserError(str(unknown("timm model", name, timm.list_models())))
    cfg = timm.models.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    if not cfg:
        meta: dict[str, Any] = {"arch": arch, **FALLBACK_META}
    else:
        crop = int(cfg.get("input_size", (3, 224, 224))[-1])
        meta = {
            "arch": arch,
            "input_size": crop,
            "resize": int(crop / float(cfg.get("crop_pct", 0.875))),
            "interpolation": str(cfg.get("interpolation", "bilinear")),
            "mean": [float(v) for v in cfg.get("mean", (0.5,) * 3)],
            "std": [float(v) for v in cfg.get("std", (0.5,) * 3)],
        }
    meta["source"] = f"timm {name}"
    if kind == "none":
        return Weights(arch=arch, kind="none", path=None, meta=meta)
    meta["num_classes"] = int(cfg.get("num_classes", 1000)) if cfg else 1000
    meta["url"] = str(cfg.get("hf_hub_id") or cfg.get("url") or name) if cfg else name
    return Weights(arch=arch, kind="imagenet", path=None, meta=meta)


def _timm_pretrained_state_dict(arch: str) -> dict[str, torch.Tensor]:
    timm = import_timm()
    try:
        model = timm.create_model(_tv_name(arch), pretrained=True)
    except Exception as e:  # network, missing cache: timm raises many kinds
        raise UserError(f"timm could not fetch pretrained weights for {arch} ({type(e).__name__}: {e}); "
                        "pass --weights PATH to a local file with its sidecar .json") from None
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
