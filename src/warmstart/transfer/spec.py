"""What a training run trains, parsed once into a :class:`TrainSpec`: model, weights, strategy, init, policies.

Every command and ``ws.train`` turn their options into one TrainSpec at the edge; everything downstream
reads typed fields (``spec.strategy.from_scratch``, ``spec.init`` an :class:`~warmstart.init.InitSpec`),
never the option strings again. ``to_dict``/``from_dict`` are what ``config.json`` holds.

**Arms.** ``compare``'s ``--strategies`` names arms, and ``train``'s ``--strategy`` may name one: a strategy
(:mod:`warmstart.transfer.strategies`) followed by modifiers, ``+l2sp[:ALPHA[,BETA]]`` (the strategy with
``--reg l2sp[:ALPHA[,BETA]]``: the start as a prior, :mod:`warmstart.transfer.prior`) and ``+interpolate`` (with
``--interpolate``: keep the best point on the line from the start to the end, :mod:`warmstart.transfer.wise`),
e.g. ``finetune-all+l2sp``, ``finetune-all+l2sp:0.1,0.01+interpolate``. :func:`parse_arm` reads one into an
:class:`Arm`; a TrainSpec built from it takes the modifiers into its own fields ``reg`` and ``interpolate``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from warmstart.errors import UserError
from warmstart.init.restarts import check_restarts
from warmstart.init.spec import InitSpec
from warmstart.options import OPTIONS
from warmstart.options import check as check_options
from warmstart.transfer.candidates import zoo_candidate
from warmstart.transfer.prior import Reg, check_interpolate, check_reg, parse_reg
from warmstart.transfer.strategies import Strategy, parse_strategy


#: what may follow a strategy in an arm's name, once each
MODIFIERS = ("l2sp[:ALPHA[,BETA]]", "interpolate")


@dataclass(frozen=True)
class Arm:
    """A strategy with an arm's modifiers: ``reg`` (``+l2sp...``) and ``interpolate`` (``+interpolate``)."""

    strategy: Strategy
    reg: Reg | None = None
    interpolate: bool = False

    @property
    def spec(self) -> str:
        """The arm's name: ``finetune-all+l2sp:0.01,0.01+interpolate`` (the strategy alone without modifiers)."""
        return self.strategy.spec + (f"+{self.reg.spec}" if self.reg is not None else "") + \
            ("+interpolate" if self.interpolate else "")

    @property
    def modified(self) -> bool:
        return self.reg is not None or self.interpolate

    # what compare asks of an arm: its strategy's answers
    @property
    def needs_pretrained(self) -> bool:
        return self.strategy.needs_pretrained

    @property
    def from_scratch(self) -> bool:
        return self.strategy.from_scratch

    @property
    def fine_tunes(self) -> bool:
        return self.strategy.fine_tunes

    def __str__(self) -> str:
        return self.spec


def parse_arm(spec: str) -> Arm:
    """Parse a strategy (:func:`~warmstart.transfer.strategies.parse_strategy`) optionally followed by the arm
    modifiers ``+l2sp[:ALPHA[,BETA]]`` and ``+interpolate``, once each, in any order."""
    text, *mods = [part.strip() for part in str(spec).strip().lower().split("+")]
    strategy = parse_strategy(text, quoted=spec)
    reg, interpolate = None, False
    for m in mods:
        if m == "interpolate" and not interpolate:
            interpolate = True
        elif m.partition(":")[0] == "l2sp" and reg is None:
            reg = parse_reg(m)
        else:
            what = "twice" if m == "interpolate" or m.partition(":")[0] == "l2sp" else "an unknown modifier"
            raise UserError(f'strategy "{spec}": "+{m}" is {what}; a strategy may be followed by '
                            f'{" and ".join("+" + x for x in MODIFIERS)}, once each')
    return Arm(strategy, reg, interpolate)


@dataclass(frozen=True)
class TrainSpec:
    """One arm's training, parsed and validated: strings given to the constructor are parsed here, once."""

    model: str = OPTIONS["model"].default
    weights: str = OPTIONS["weights"].default
    strategy: Strategy = Strategy("transfer")  # given as a Strategy, an Arm or an arm's name: a Strategy once built
    init: InitSpec | str | None = None   # an InitSpec, or "lsuv" (needs a batch); None: the model's own init
    bn: str = OPTIONS["bn"].default
    head_init: str = OPTIONS["head_init"].default
    augment: str = OPTIONS["augment"].default
    feature_cache: str = OPTIONS["feature_cache"].default
    restarts: int = OPTIONS["restarts"].default
    restart_epochs: int = OPTIONS["restart_epochs"].default
    reg: Reg | str | None = None   # --reg: "none" or l2sp[:ALPHA[,BETA]] (transfer.prior), parsed here
    interpolate: bool = OPTIONS["interpolate"].default  # --interpolate: keep the best point between start and end (transfer.wise)

    def __post_init__(self) -> None:
        arm = parse_arm(self.strategy) if isinstance(self.strategy, str) else self.strategy
        if not isinstance(arm, (Strategy, Arm)):
            raise UserError(f"--strategy must be a strategy spec such as transfer, got {self.strategy!r}")
        object.__setattr__(self, "reg", parse_reg(self.reg))
        if isinstance(arm, Arm) and arm.modified:  # an arm's modifiers (finetune-all+l2sp) become this spec's own fields
            if arm.reg is not None and self.reg is not None and arm.reg != self.reg:
                raise UserError(f"--strategy {arm.spec} and --reg {self.reg.spec} ask for two different regularisations; "
                                "give it once")
            object.__setattr__(self, "reg", arm.reg or self.reg)
            object.__setattr__(self, "interpolate", bool(self.interpolate or arm.interpolate))
        object.__setattr__(self, "strategy", arm.strategy if isinstance(arm, Arm) else arm)
        if not isinstance(self.interpolate, bool):
            raise UserError(f"--interpolate is a flag (True or False), got {self.interpolate!r}")
        check_reg(self.reg, self.strategy)
        if self.interpolate:
            check_interpolate(self.strategy, self.head_init)
        if isinstance(self.init, str) and not self.init.strip():
            object.__setattr__(self, "init", None)
        if self.init is not None:
            if not self.strategy.from_scratch:
                raise UserError(f"--init {self.init} initialises a model trained from scratch, but --strategy {self.strategy.spec} "
                                "starts from pretrained weights (its new head gets torchvision's own init); drop --init or "
                                "use --strategy scratch")
            from warmstart.init.spec import check_init

            object.__setattr__(self, "init", check_init(self.init))  # parsed once; a bad spec fails here
        check_options({"augment": self.augment, "feature_cache": self.feature_cache, "head_init": self.head_init, "bn": self.bn})
        check_restarts(self.restarts, self.restart_epochs)
        if self.restarts > 1 and not self.strategy.from_scratch:
            raise UserError(f"--restarts {self.restarts} needs --strategy scratch: strategy {self.strategy.spec} starts from the "
                            "pretrained weights, one start only; drop --restarts or train from scratch")

    @property
    def augments(self) -> bool:
        """``augment`` resolved: on | off, or auto = random crops + flips when training from scratch or
        fine-tuning from a random head.

        Not for a head that starts at its linear probe: the probe is fitted on centre crops, and on hymenoptera
        random crops never helped there (0-1.3 points lower, measured, README), while centre crops let the frozen
        layers of transfer, finetune-last and gradual run once (feature cache).
        """
        if self.augment != "auto":
            return self.augment == "on"
        return self.strategy.from_scratch or (self.head_init == "random" and not self.strategy.head_only)

    @property
    def weights_to_load(self) -> str:
        """Scratch needs only the preprocessing of "imagenet" weights, not their tensors (nothing to download)."""
        pretrained = self.weights == "imagenet" or (zoo_candidate(self.weights) or ("",))[0] == "imagenet"
        return "none" if self.strategy.from_scratch and pretrained else self.weights

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["strategy"] = self.strategy.spec
        d["init"] = str(self.init) if self.init is not None else None
        d["reg"] = self.reg.spec if self.reg is not None else "none"
        return d

    @property
    def arm(self) -> str:
        """The strategy with this spec's modifiers, as ``compare`` names the arm (``finetune-all+l2sp:0.01,0.01``)."""
        return Arm(self.strategy, self.reg, self.interpolate).spec

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    from_options = from_dict  # the CLI's option names are the field names

