"""Which start? Score candidate pretrained starts on the user's training images, before any training.

    --candidates ─ expand (folders: every weights file with a sidecar .json) ─ resolve_weights ─ create_model
                   (every candidate built, so a missing file, a checkpoint that would run code, weights of
                   another architecture or a duplicate fail before anything is written)
    DATA ─ load_data ─ the training split decoded ONCE per (resize, crop, interpolation), shared by candidates
    per candidate: the layers below the classifier run once over the training images (the recipe's feature
    cache, ``transfer.recipe.frozen_features``) ─> features ─> probe_cv, knn_loo, logme, leep (``transfer.scores``)

The validation images are not decoded here; ``--verify`` (:func:`verify`) trains every candidate with a
strategy under the recipe (``run_arm``, on the same Prepared data, so the frozen features computed for the
scores are reused) and sets the real validation accuracy beside the scores.

``none`` is the floor: the same architecture with random weights (its features in eval mode, the preprocessing
of a pretrained candidate of that architecture). Its ``--verify`` run trains from scratch, which is what a
random start means in ``warmstart train``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from warmstart.data import DataSplits, ImageDataset
from warmstart.data.spec import DataSpec
from warmstart.data.dataset import AUGMENT_SCALE
from warmstart.engine.console import log
from warmstart.engine.run import RunSpec
from warmstart.engine.layout import REPORT_HTML, VERIFY
from warmstart.errors import UserError
from warmstart.options import VERIFY_EPOCHS
from warmstart.transfer.candidates import SAFETENSORS_SUFFIX, SPECIAL, STATE_DICT_SUFFIXES, split_candidates, zoo_candidate
from warmstart.transfer.weights import TIMM_PREFIX, Weights, check_arch, resolve_weights

SCORES = ("probe_cv", "knn_loo", "logme", "leep")


@dataclass
class Candidate:
    spec: str            # as given (a folder's files: their paths)
    name: str            # short label for tables: the file stem, imagenet:<arch>, none:<arch>
    weights: Weights
    arch: str
    model: nn.Module | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------- candidates
def expand(tokens: Sequence[str]) -> list[str]:
    """Folders become their weights files (``.pth``/``.pt``/``.safetensors`` with a sidecar ``.json``), sorted."""
    out: list[str] = []
    for t in tokens:
        p = Path(t).expanduser()
        if t.lower() not in SPECIAL and p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (*STATE_DICT_SUFFIXES, SAFETENSORS_SUFFIX)
                           and f.with_suffix(".json").is_file())
            if not files:
                raise UserError(f"--candidates: the folder {p} holds no weights file (.pth/.pt/.safetensors with a "
                                "sidecar .json); give files, or a folder that has some")
            out += [str(f) for f in files]
        else:
            out.append(t)
    return out


def resolve(tokens: Sequence[str], *, model: str | None, num_classes: int, seed: int = 0) -> list[Candidate]:
    """Resolve and build every candidate (all errors before any work); refuse duplicates.

    Zoo names (``imagenet:ARCH``, ``timm:NAME``, ``none:ARCH``) mix architectures in one ranking, each with the
    preprocessing of its own weights. Their files come from the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
    or timm's (the Hugging Face cache); every file missing offline is named in one error (:func:`check_zoo_files`).
    """
    cands: list[Candidate] = []
    seen: dict[str, str] = {}
    archs_of_files: list[Weights] = []
    items = expand(tokens)
    check_zoo_files(items, model)
    floors: list[tuple[str, str | None]] = []  # (token, architecture) of none / none:ARCH
    for t in items:
        low, zoo = t.lower(), zoo_candidate(t)
        if low == "none" or (zoo and zoo[0] == "none"):
            floors.append((t, zoo[1] if zoo else None))
            continue
        if low == "imagenet" and not model:
            raise UserError("--candidates imagenet needs an architecture: give --model ARCH (e.g. mobilenet_v3_small), "
                            "or name it: imagenet:ARCH")
        if zoo:
            w = _resolve_zoo(t, *zoo)
        else:
            w = resolve_weights(t, model if low == "imagenet" else None)
        by_name = low == "imagenet" or zoo is not None
        key = f"imagenet:{w.arch}" if by_name else f"file:{w.fingerprint}"
        if key in seen:
            raise UserError(f"--candidates: {t} is given twice (the same weights as {seen[key]}); every candidate must "
                            "be a different start")
        seen[key] = t
        name = _zoo_name(w.arch or "") if by_name else Path(t).stem
        cands.append(Candidate(t, name, w, w.arch or ""))
        archs_of_files.append(w)
    if len(set(c.name for c in cands)) < len(cands):
        dup = next(c.name for c in cands if sum(d.name == c.name for d in cands) > 1)
        raise UserError(f"--candidates: two candidates are named {dup} (files of the same name in different folders); "
                        "rename one")
    floor_archs: set[str] = set()
    for t, named in floors:
        arch = named or model or (archs_of_files[0].arch if archs_of_files else None)
        if not arch:
            raise UserError("--candidates none needs an architecture: give --model ARCH, a weights file beside it, "
                            "or name it: none:ARCH")
        if arch in floor_archs:
            raise UserError(f"--candidates: the random floor of {arch} is given twice; every candidate must be a different start")
        floor_archs.add(arch)
        w = _resolve_zoo(t, "none", arch) if named else resolve_weights("none", arch)
        same = next((x for x in archs_of_files if x.arch == arch), None)
        if same is not None:  # the floor sees the images exactly as the pretrained start of its architecture does
            w = Weights(arch=arch, kind="none", path=None,
                        meta={**w.meta, **{k: same.meta[k] for k in ("input_size", "resize", "interpolation", "mean", "std")
                                           if k in same.meta}})
        cands.append(Candidate(t, f"none:{arch}", w, arch))
    if not cands:
        raise UserError("--candidates: no candidate given")
    for c in cands:  # builds every model: a pickle that would run code, or tensors of another architecture, fail here
        c.model = build_scoring_model(c, num_classes, seed)
        c.details["preprocess"] = c.weights.preprocess.to_dict()
    return cands


def _zoo_name(arch: str) -> str:
    """The table's name of a start given by name: ``imagenet:resnet18``, ``timm:convnext_tiny``."""
    return arch if arch.startswith(TIMM_PREFIX) else f"imagenet:{arch}"


def _resolve_zoo(token: str, kind: str, arch: str) -> Weights:
    """``resolve_weights(kind, arch)`` for a zoo name, its errors prefixed with the candidate."""
    try:
        return resolve_weights(kind, arch)
    except UserError as e:
        raise UserError(f"--candidates {token}: {e}") from None


def check_zoo_files(items: Sequence[str], model: str | None) -> None:
    """Every pretrained file the zoo names need, present or fetchable; else ONE error that names each missing file and
    where to put it.

    torchvision weights: ``torch.hub.get_dir()/checkpoints/<file of the URL>`` (an existing file there is used as
    is, without a hash check, as torch.hub does). Offline (``$WARMSTART_OFFLINE``) a missing one is reported; online
    each is downloaded there first and those that fail are reported. timm weights: the Hugging Face cache
    (``$HF_HOME/hub``), checked offline only (online timm fetches them itself).
    """
    from warmstart.transfer.weights import imagenet_checkpoint, offline

    missing: list[str] = []
    where: set[str] = set()
    todo: list[str] = []
    for t in items:
        zoo = zoo_candidate(t)
        if t.lower() == "imagenet" and model:
            zoo = ("imagenet", model)
        if not zoo or zoo[0] != "imagenet":
            continue
        arch = zoo[1]
        if arch.startswith(TIMM_PREFIX):
            if offline():
                hole = _timm_missing(t, arch)
                if hole:
                    missing.append(f"{hole[0]} of {hole[1]} for {t}")
                    todo.append(f"fetch {hole[1]} into the Hugging Face cache {hole[2]} (on a machine with internet: "
                                f"hf download {hole[1]} {hole[0]}, then copy that folder)")
            continue
        try:
            check_arch(arch)
        except UserError as e:
            raise UserError(f"--candidates {t}: {e}") from None
        found = imagenet_checkpoint(arch)
        if found is None:
            raise UserError(f'--candidates {t}: torchvision has no ImageNet weights for "{arch}"; choose another '
                            "architecture or give a weights file with its sidecar .json")
        url, path = found
        if path.is_file():
            continue
        if not offline():
            try:
                resolve_weights("imagenet", arch)  # downloads it into the hub cache
                continue
            except UserError:
                pass
        missing.append(f"{path.name} for {t} (from {url})")
        where.add(str(path.parent))
    if missing:
        many = len(missing) > 1
        why = "$WARMSTART_OFFLINE is set" if offline() else f"{'they' if many else 'it'} could not be downloaded"
        if where:
            todo.insert(0, f"put the torchvision file{'s' if len(missing) - len(todo) > 1 else ''} in "
                           f"{', '.join(sorted(where))} under exactly that name")
        raise UserError(f"--candidates: {len(missing)} pretrained file{'s' if many else ''} missing and {why}: "
                        f"{'; '.join(missing)}; {'; '.join(todo)}; or give weights files with their sidecar .json instead")


def _timm_missing(token: str, arch: str) -> tuple[str, str, str] | None:
    """The file a timm model's pretrained weights need that the Hugging Face cache lacks: (file, repository, the
    cache folder); None when present, or not knowable (weights from a URL, no huggingface_hub)."""
    try:
        w = resolve_weights("imagenet", arch)
    except UserError as e:
        raise UserError(f"--candidates {token}: {e}") from None
    repo = str(w.meta.get("url", ""))
    if "/" not in repo or repo.startswith("http"):
        return None  # weights from a URL: timm's own cache, fetched by timm
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        return None
    for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, name), str):
            return None
    return "model.safetensors", repo, str(constants.HF_HUB_CACHE)


def build_scoring_model(c: Candidate, num_classes: int, seed: int) -> nn.Module:
    """The candidate's network with its source classifier kept (LEEP needs it); ``none``: random, ``num_classes``."""
    from warmstart.transfer.backbones import create_model

    torch.manual_seed(seed)
    return create_model(c.arch, None if c.weights.pretrained else num_classes, c.weights)


# --------------------------------------------------------------------------------------------- data
class SharedImages:
    """Decoded datasets shared by candidates: each split decoded once per (resize, interpolation) -- what shapes the
    decoded squares, as the decoded-image cache keys them -- and viewed with each candidate's own crop, mean and std
    (the crop is taken per sample, the normalisation per batch, so a view costs nothing)."""

    def __init__(self, splits: DataSplits, *, skip_bad_images: bool = False) -> None:
        self.splits, self.skip = splits, skip_bad_images
        self._sets: dict[tuple, ImageDataset] = {}
        self._views: dict[tuple, ImageDataset] = {}
        self.decode_seconds = 0.0

    def get(self, w: Weights, split: str) -> ImageDataset:
        from warmstart.engine.distributed import cores_per_rank

        pre = w.preprocess
        key = (split, pre.resize, pre.interpolation)
        if key not in self._sets:
            t0 = time.perf_counter()
            src = self.splits.train if split == "train" else self.splits.val
            self._sets[key] = ImageDataset(src, pre, train=split == "train", skip_bad_images=self.skip, workers=cores_per_rank())
            self.decode_seconds += time.perf_counter() - t0
        base = self._sets[key]
        if base.preprocess == pre:
            return base
        if (split, pre) not in self._views:  # the same decoded squares, cropped and normalised as this candidate's weights
            view = copy.copy(base)
            view.preprocess = pre
            self._views[(split, pre)] = view
        return self._views[(split, pre)]

    @property
    def decoded(self) -> int:
        return len(self._sets)


def prepared_for(c: Candidate, images: SharedImages, *, val: bool = False):
    """The recipe's :class:`~warmstart.transfer.recipe.Prepared` of one candidate, on the shared decoded images."""
    from warmstart.transfer.recipe import Prepared

    p = c.details.get("_prepared")
    if p is None:
        p = Prepared(images.splits, c.weights, images.get(c.weights, "train"), None, None, {})  # type: ignore[arg-type]
        c.details["_prepared"] = p
    if val and p.val is None:
        p.val = images.get(c.weights, "val")
    return p


# --------------------------------------------------------------------------------------------- scores
class TimmFeatures(nn.Module):
    """A timm model up to its classifier: ``forward_head(forward_features(x), pre_logits=True)``, timm's own cut
    (the pooled features its classifier takes), for any timm architecture."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def features_of(c: Candidate, images: SharedImages, cfg) -> tuple[torch.Tensor, torch.Tensor, nn.Module | None]:
    """One frozen pass over the training images: the features entering the classifier, labels, and the head."""
    from warmstart.transfer.features import split_at
    from warmstart.transfer.groups import layer_groups
    from warmstart.transfer.recipe import frozen_features  # the recipe's feature cache

    assert c.model is not None
    if c.arch.startswith(TIMM_PREFIX):
        trunk, head, layer = TimmFeatures(c.model), c.model.get_classifier(), "pre_logits"
    else:
        groups = layer_groups(c.model)
        trunk, head = split_at(c.model, groups, len(groups) - 1)
        layer = groups[-2].name
    p = prepared_for(c, images)
    cache = frozen_features(p, trunk, p.train_plain, "train", layer, cfg, "memory", None)
    x, y = cache.tensors()
    return x.flatten(1), y, head


def source_head(c: Candidate) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pretrained classifier (weight, bias) over the source classes, when the candidate has one."""
    if not c.weights.pretrained or c.model is None:
        return None
    from warmstart.transfer.backbones import find_head

    head = c.model.get_submodule(find_head(c.model))
    if not isinstance(head, nn.Linear) or head.bias is None:
        return None
    return head.weight.detach().float(), head.bias.detach().float()


def score(c: Candidate, images: SharedImages, cfg, *, seed: int = 0) -> Candidate:
    """Compute the four scores of ``c`` (None where one does not apply) and the time it took."""
    from warmstart.transfer import scores as S

    t0 = time.perf_counter()
    n = images.splits.num_classes
    x, y, _ = features_of(c, images, cfg)
    t1 = time.perf_counter()
    prior = source_head(c)
    if prior is not None and prior[0].shape[1] != x.shape[1]:
        prior = None
    probe = S.probe_cv(x, y, n, prior=prior, seed=seed)
    knn = S.knn_loo(x, y, n, seed=seed)
    lm = S.logme(x, y, n)
    lp = S.leep(x @ prior[0].T + prior[1], y, n) if prior is not None else None
    c.scores = {"probe_cv": _num(probe.accuracy), "knn_loo": _num(knn.accuracy), "logme": _num(lm), "leep": _num(lp)}
    c.details.update(features=list(x.shape), feature_seconds=round(t1 - t0, 3), probe_folds=probe.fold_accuracy,
                     probe_spread=_num(probe.spread), probe_l2=probe.l2, probe_prior=probe.prior, knn_k=knn.k,
                     source_classes=int(prior[0].shape[0]) if prior is not None else None)
    c.seconds = time.perf_counter() - t0
    log(f"{c.name}: probe_cv {_fmt(c.scores['probe_cv'])}, knn_loo {_fmt(c.scores['knn_loo'])} (k {knn.k}), "
        f"logme {_fmt(c.scores['logme'])}, leep {_fmt(c.scores['leep'])}; features {tuple(x.shape)} in {t1 - t0:.1f} s, "
        f"{c.seconds:.1f} s in all")
    return c


def _num(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else round(float(v), 6)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


# --------------------------------------------------------------------------------------------- ranking
def order(cands: Sequence[Candidate], by: str) -> list[Candidate]:
    """Best first by score ``by``; candidates without it last (in the given order)."""
    return sorted(cands, key=lambda c: (c.scores.get(by) is None, -(c.scores.get(by) or 0.0)))


def beats(a: Candidate, b: Candidate) -> bool | None:
    """Whether ``a``'s probe CV accuracy beats ``b``'s beyond noise: the mean paired fold difference exceeds twice
    its standard error (the folds are the same images for every candidate). None without fold accuracies."""
    fa, fb = a.details.get("probe_folds") or [], b.details.get("probe_folds") or []
    if len(fa) < 2 or len(fa) != len(fb):
        return None
    d = [p - q for p, q in zip(fa, fb)]
    m = sum(d) / len(d)
    se = math.sqrt(sum((v - m) ** 2 for v in d) / (len(d) - 1) / len(d))
    return m > 2 * se if se > 0 else m > 0


def verdict(ranked: Sequence[Candidate], by: str) -> tuple[list[str], str]:
    """The candidates the top one cannot be told apart from, and a sentence that says what the ranking shows."""
    if not ranked or ranked[0].scores.get(by) is None:
        return [], f"no candidate has a {by} score"
    top = ranked[0]
    tied = [c.name for c in ranked[1:] if c.scores.get(by) is not None and beats(top, c) is False]
    if tied:
        return tied, (f"no clear winner: {top.name} ranks first by {by}, but its linear-probe CV accuracy does not beat "
                      f"{', '.join(tied)} by more than twice the standard error of the paired fold differences")
    if len(ranked) > 1 and beats(top, ranked[1]) is None:
        return [], f"{top.name} ranks first by {by} (no fold spread to judge the margin: too few images per class)"
    return [], f"{top.name} ranks first by {by}, beyond the probe's cross-validation noise"


def correlations(cands: Sequence[Candidate], real: str = "final_val_accuracy") -> dict[str, dict[str, float | None]]:
    """Per score: Kendall tau and Spearman rho (scipy.stats) between the score and the real result across candidates."""
    from scipy import stats

    out: dict[str, dict[str, float | None]] = {}
    keys = sorted({k for c in cands for k in c.scores})
    for k in keys:
        pairs = [(c.scores[k], c.details.get("verify", {}).get(real)) for c in cands]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
            out[k] = {"kendall_tau": None, "spearman": None, "n": len(pairs)}
            continue
        a, b = zip(*pairs)
        tau = stats.kendalltau(a, b).statistic
        rho = stats.spearmanr(a, b).statistic
        out[k] = {"kendall_tau": _num(tau), "spearman": _num(rho), "n": len(pairs)}
    return out


# --------------------------------------------------------------------------------------------- verify
def verify(cands: Sequence[Candidate], images: SharedImages, run, strategy: str, *, epochs: int, cfg) -> None:
    """Train every candidate with ``strategy`` (an arm: ``finetune-all+l2sp`` too) under the recipe (``none``: from
    scratch); record the real accuracy."""
    from dataclasses import replace

    from warmstart.transfer.recipe import run_arm
    from warmstart.transfer.spec import TrainSpec, parse_arm

    for c in cands:
        strat = parse_arm(strategy if c.weights.pretrained else "scratch")
        p = prepared_for(c, images, val=True)
        spec = TrainSpec(model=c.arch, strategy=strat, feature_cache="memory")
        if spec.augments and p.train_aug is None:
            p.train_aug = p.train_plain.with_augmentation(scale=AUGMENT_SCALE)
        sub = run.sub(f"{VERIFY}/{_dirname(c.name)}", {"candidate": c.spec, "strategy": strat.spec, "epochs": epochs})
        try:
            _, _, s = run_arm(p, sub, spec, replace(cfg, epochs=epochs, lr_decay=1.0))
        finally:
            sub.close()
        c.details["verify"] = {"strategy": strat.spec, "final_val_accuracy": s["final_val_accuracy"],
                               "best_val_accuracy": s["best_val_accuracy"], "train_seconds": s["train_seconds"],
                               "run": str(Path(VERIFY) / _dirname(c.name))}
        log(f"verify {c.name} ({strat.spec}, {epochs} epochs): final val accuracy {s['final_val_accuracy']:.4f}")


def _dirname(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name).strip("_.") or "candidate"


def check_strategy(strategy: str | None) -> None:
    if strategy is not None:
        from warmstart.transfer.spec import parse_arm

        parse_arm(strategy)


def as_rows(cands: Sequence[Candidate]) -> list[dict[str, Any]]:
    """summary.json's ``candidates``."""
    rows = []
    for c in cands:
        d = {k: v for k, v in c.details.items() if not k.startswith("_")}
        rows.append({"weights": c.spec, "name": c.name, "arch": c.arch, "scores": dict(c.scores),
                     "seconds": round(c.seconds, 3), **d})
    return rows


# --------------------------------------------------------------------------------------------- the function
def rank_starts(data: DataSpec, candidates: str | Sequence[str], *, model: str | None = None, by: str = "probe_cv",
                verify_strategy: str | None = None, epochs: int = VERIFY_EPOCHS["starts"], cfg=None, run: RunSpec | None = None,
                write=None) -> dict[str, Any]:
    """Score pretrained starts on the training split of ``data`` (a :class:`~warmstart.data.spec.DataSpec`); with
    ``verify_strategy``, train each and correlate.

    Writes the run directory ``run`` names (config.json, summary.json and, through ``write(run, summary)``, the
    report). Everything the user can get wrong fails before it is created. Returns the summary, plus ``report``.
    """
    from warmstart.data import describe_splits
    from warmstart.engine.config import TrainConfig
    from warmstart.errors import unknown

    t0 = time.perf_counter()
    cfg = cfg or TrainConfig()
    if by not in SCORES:
        raise unknown("score (--by)", by, SCORES)
    check_strategy(verify_strategy)
    tokens = split_candidates(candidates)
    splits = data.load(cfg.seed)
    cands = resolve(tokens, model=model, num_classes=splits.num_classes, seed=cfg.seed)
    log(describe_splits(splits) + f"; {len(cands)} candidates: {', '.join(c.name for c in cands)}")
    images = SharedImages(splits, skip_bad_images=data.skip_bad_images)
    for c in cands:
        score(c, images, cfg, seed=cfg.seed)
    ranked = order(cands, by)
    tied, sentence = verdict(ranked, by)
    record = {**data.to_dict(), "candidates": list(tokens), "model": model, "by": by, "verify": verify_strategy,
              "epochs": epochs, **cfg.to_dict()}  # a library call's options
    run = (run or RunSpec()).open("rank", {"candidates": [c.spec for c in cands], "train": cfg.to_dict()},
                                  tensorboard=cfg.tensorboard, options=record)
    summary: dict[str, Any] = {"kind": "starts", "data": splits.source, "classes": splits.classes,
                               "train_images": len(splits.train), "by": by}
    if verify_strategy:
        verify(cands, images, run, verify_strategy, epochs=epochs, cfg=cfg)
        summary["verify"] = {"strategy": verify_strategy, "epochs": epochs, "val_images": len(splits.val),
                             "correlations": correlations(cands)}
    summary.update({
        "candidates": as_rows(ranked), "ranking": [c.spec for c in ranked], "best": ranked[0].spec,
        "clear_winner": not tied, "within_noise": tied, "verdict": sentence,
        "decoded_datasets": images.decoded, "decode_seconds": round(images.decode_seconds, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    })
    run.write_summary(summary)
    if write is not None:
        write(run, summary)
    run.close()
    return {**summary, "report": str(run.dir / REPORT_HTML)}  # returned, not in summary.json
