"""DATA and the options that say which images of it to use, parsed once into a :class:`DataSpec`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from warmstart.data.loading import DataSplits, load_data
from warmstart.errors import UserError
from warmstart.options import OPTIONS, check


def parse_classes(classes: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--classes a,b,c`` (or a list) -> ``("a", "b", "c")``; None when not given."""
    if classes is None:
        return None
    items = classes.split(",") if isinstance(classes, str) else [str(c) for c in classes]
    items = [c.strip() for c in items if c.strip()]
    return tuple(items) or None


@dataclass(frozen=True)
class DataSpec:
    """Which images a run trains and validates on: DATA plus --data-root, --val-fraction, --subset, --classes."""

    data: str
    data_root: str | None = None
    val_fraction: float = OPTIONS["val_fraction"].default
    subset: int | None = None
    skip_bad_images: bool = OPTIONS["skip_bad_images"].default
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, str) or not self.data:
            raise UserError(f"DATA must be a folder, a CSV file or a data set name, got {self.data!r}")
        check({"val_fraction": self.val_fraction, "subset": self.subset, "skip_bad_images": self.skip_bad_images})

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "DataSpec":
        """From the CLI's (or ``ws.train``'s) options: ``data``, ``data_root``, ``val_fraction``, ... (others ignored)."""
        data = options.get("data")
        root = options.get("data_root")
        return cls(data=str(data) if isinstance(data, Path) else data, data_root=str(root) if root is not None else None,
                   val_fraction=options.get("val_fraction", OPTIONS["val_fraction"].default), subset=options.get("subset"),
                   skip_bad_images=bool(options.get("skip_bad_images", False)), classes=parse_classes(options.get("classes")))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes) if self.classes else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DataSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "classes" and v is not None else v) for k, v in d.items() if k in names})

    def load(self, seed: int = 0) -> DataSplits:
        """The listed splits (nothing decoded), restricted to ``classes`` when given."""
        splits = load_data(self.data, data_root=self.data_root, val_fraction=self.val_fraction, subset=self.subset,
                           seed=seed, skip_bad_images=self.skip_bad_images)
        return restrict_classes(splits, self.classes) if self.classes else splits


def restrict_classes(splits: DataSplits, classes: Sequence[str]) -> DataSplits:
    """Keep only ``classes`` (names), relabelled 0..k-1 in the given order."""
    missing = [c for c in classes if c not in splits.classes]
    if missing:
        raise UserError(f"--classes: {missing[0]!r} is not a class of {splits.name} (it has: {', '.join(splits.classes)})")
    if len(set(classes)) < 2:
        raise UserError("--classes needs at least 2 distinct classes")
    old = [splits.classes.index(c) for c in classes]
    remap = {o: i for i, o in enumerate(old)}

    def keep(src):
        if src is None:
            return None
        idx = [i for i, y in enumerate(src.labels) if y in remap]
        sub = src.select(idx)
        sub.labels = [remap[y] for y in sub.labels]
        sub.classes = list(classes)
        return sub

    return DataSplits(train=keep(splits.train), val=keep(splits.val), test=keep(splits.test), classes=list(classes),
                      source=splits.source + f"; classes {', '.join(classes)}", fingerprint=f"{splits.fingerprint}:{','.join(classes)}",
                      val_is_test=splits.val_is_test)
