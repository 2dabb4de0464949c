"""The knobs of training, validated at the edge: epochs and learning rates, the optimizer, the loop.

``epochs``, ``lr`` and ``label_smoothing`` may be left ``None``: the command's recipe decides (``train``:
:func:`warmstart.transfer.recipe.default_lr` and friends; ``symmetry`` and ``depth``: their documented
defaults). Every field is read by the commands that take a TrainConfig; none is silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from warmstart.errors import UserError, unknown
from warmstart.options import OPTIONS, check

DEVICES = ("auto", "cpu", "cuda", "mps")
#: the options' defaults, declared once in warmstart.options (the fields below without one are the engine's own)
_D = {name: o.default for name, o in OPTIONS.items()}


@dataclass
class TrainConfig:
    epochs: int | None = None    # None = the command's default (train 5, symmetry 1, depth 30)
    lr: float | None = None      # None = the recipe's: the head's rate (train), the one rate (symmetry, depth)
    backbone_lr: float | None = None  # fine-tuned blocks [default: lr/10]
    lr_decay: float = _D["lr_decay"]  # each block further from the head gets this factor more
    batch_size: int = _D["batch_size"]
    optimizer: str = _D["optimizer"]
    momentum: float = _D["momentum"]
    weight_decay: float = _D["weight_decay"]
    schedule: str = _D["schedule"]
    warmup_epochs: float = _D["warmup_epochs"]
    step_size: int = 10          # epochs between LR drops for schedule=step
    gamma: float = 0.1
    label_smoothing: float | None = None  # None = the caller's recipe (train: 0.1 from a linear-probe head), else 0
    grad_clip: float = _D["grad_clip"]  # max grad norm; 0 = off
    early_stopping: int = _D["early_stopping"]  # patience in epochs on val loss; 0 = off
    seed: int = _D["seed"]
    deterministic: bool = _D["deterministic"]
    device: str = _D["device"]
    amp: str = _D["amp"]  # auto = bf16 on CUDA, none elsewhere
    channels_last: bool | None = None  # None = auto: on for x86 CPUs (oneDNN; 1.35x measured), off elsewhere
    workers: int = _D["workers"]
    eval_batch_size: int = 0     # 0 = 2 x batch_size
    quiet: bool = _D["quiet"]  # no log lines, no progress bars (errors and warnings still show)
    tensorboard: bool = _D["tensorboard"]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field that is an option checked against its one declaration (:mod:`warmstart.options`); a field
        whose default here is None may stay None (the command decides)."""
        check({f.name: getattr(self, f.name) for f in fields(self)
               if f.name in OPTIONS and not (f.default is None and getattr(self, f.name) is None)})
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise unknown("device", self.device, DEVICES)

    def to_dict(self) -> dict:
        return asdict(self)

    def check_one_rate(self, command: str) -> None:
        """For commands that train every layer at one rate (symmetry, depth): backbone_lr/lr_decay would be ignored."""
        if self.backbone_lr is not None or self.lr_decay != 1.0:
            raise UserError(f"{command} trains every layer at one learning rate (--lr); backbone_lr and lr_decay apply to "
                            "fine-tuning pretrained blocks (train, compare): leave them unset")

    def with_defaults(self, **defaults) -> "TrainConfig":
        """This config with every field that is None here taken from ``defaults`` (a command's own defaults)."""
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
