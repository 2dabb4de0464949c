"""The knobs of training, validated at the edge: epochs and learning rates, the optimizer, the loop.

``epochs``, ``lr`` and ``label_smoothing`` may be left ``None``: the command's recipe decides (``train``:
:func:`warmstart.transfer.recipe.default_lr` and friends; ``symmetry`` and ``depth``: their documented
defaults). Every field is read by the commands that take a TrainConfig; none is silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from warmstart.errors import UserError, unknown

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
AMPS = ("none", "bf16", "fp16", "auto")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    epochs: int | None = None    # None = the command's default (train 5, symmetry 1, depth 30)
    lr: float | None = None      # None = the recipe's: the head's rate (train), the one rate (symmetry, depth)
    backbone_lr: float | None = None  # fine-tuned blocks [default: lr/10]
    lr_decay: float = 1.0        # each block further from the head gets this factor more
    batch_size: int = 32
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 10          # epochs between LR drops for schedule=step
    gamma: float = 0.1
    label_smoothing: float | None = None  # None = the caller's recipe (train: 0.1 from a linear-probe head), else 0
    grad_clip: float = 0.0       # max grad norm; 0 = off
    early_stopping: int = 0      # patience in epochs on val loss; 0 = off
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: str = "none"            # auto = bf16 on CUDA, none elsewhere
    channels_last: bool | None = None  # None = auto: on for x86 CPUs (oneDNN; 1.35x measured), off elsewhere
    workers: int = 0
    eval_batch_size: int = 0     # 0 = 2 x batch_size
    quiet: bool = False          # no log lines, no progress bars (errors and warnings still show)
    tensorboard: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, flag: str, value, what: str) -> None:
            if not ok:
                raise UserError(f"--{flag} must be {what}, got {value!r}")

        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch-size", self.batch_size, "a whole number >= 1")
        need(self.epochs is None or (isinstance(self.epochs, int) and not isinstance(self.epochs, bool) and self.epochs >= 1),
             "epochs", self.epochs, "a whole number >= 1")
        for flag, v in (("lr", self.lr), ("backbone-lr", self.backbone_lr)):
            need(v is None or (isinstance(v, (int, float)) and 0 < v < float("inf")), flag, v, "a positive number")
        need(isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1, "lr-decay", self.lr_decay, "in (0, 1]")
        need(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        need(self.weight_decay >= 0, "weight-decay", self.weight_decay, ">= 0")
        need(self.warmup_epochs >= 0, "warmup-epochs", self.warmup_epochs, ">= 0")
        need(self.label_smoothing is None or 0 <= self.label_smoothing < 1, "label-smoothing", self.label_smoothing, "in [0, 1)")
        need(self.early_stopping >= 0, "early-stopping", self.early_stopping, ">= 0")
        need(self.workers >= 0, "workers", self.workers, ">= 0")
        need(self.channels_last in (None, True, False), "channels-last", self.channels_last, "on, off or auto")
        if self.optimizer not in OPTIMIZERS:
            raise unknown("optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise unknown("schedule", self.schedule, SCHEDULES)
        if self.amp not in AMPS:
            raise unknown("amp mode", self.amp, AMPS)
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
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
