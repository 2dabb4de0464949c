"""Every option of every command, declared once: name, type, default, choices, range and help.

From this one table come the click options of the command line (:func:`click_options`), the keywords,
defaults and docstrings of the ``ws.*`` verbs (:func:`verb`, which sets their ``__signature__`` as fastai's
``@delegates`` does) and the range and choice checks of :class:`~warmstart.engine.config.TrainConfig` and
:class:`~warmstart.transfer.spec.TrainSpec` (:func:`check`). A command's own default (``symmetry`` trains 1
epoch at lr 0.01 with SGD) is written in :data:`COMMANDS`, next to the list of options the command takes.

Plain Python only (click is imported inside :func:`click_options`): ``import warmstart`` and ``--help`` stay light.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from warmstart.errors import UserError, unknown

_MISSING = object()


@dataclass(frozen=True)
class Option:
    """One option: ``name`` is the Python keyword (``weight_decay``), the flag is ``--weight-decay``."""

    name: str
    type: type = str                      # int, float, str, bool (bool: a flag)
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    show_default: bool = True             # False: the help says what None means ("[default: per strategy]")
    off_flag: str | None = None           # "--no-channels-last": a bool that may also stay None (auto)
    short: str | None = None              # "-q"
    folder: bool = False                  # a folder path (click.Path(file_okay=False))
    python: str | None = None             # the Python annotation when it is wider than the CLI's (lists, ints)
    argument: bool = False                # DATA: a positional argument on the command line
    positional: bool = False              # also positional in Python (``ws.rank(data, candidates)``)
    required: bool = False                # the command line needs it (Python: a UserError when left None)
    env: str | None = None                # command line only: sets this environment variable for the process
    what: str | None = None               # how an error names a bad choice ("BatchNorm policy"); default: the option
    multiple: bool = False                # repeatable (--kind images --kind other): a tuple
    metavar: str | None = None            # the value's name in --help (SIZE, DAYS, DIR)
    nargs: int | None = None              # an argument taking any number of values (-1): a tuple
    file: bool = False                    # a file path (click.Path(dir_okay=False))

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def __call__(self, **changes: Any) -> "Option":
        """This option with a command's own default or help."""
        return replace(self, **changes)

    # ------------------------------------------------------------------------------------------- validation
    def check(self, value: Any) -> Any:
        """``value`` if it is valid for this option (None passes where the default is None), else a UserError
        ``--flag must be ..., got ...``: the same words as the command line's own range check."""
        if value is None and (self.default is None or self.off_flag):
            return value
        if self.choices is not None and self.multiple:
            bad = next((v for v in ([value] if isinstance(value, str) else value) if v not in self.choices), None)
            if bad is not None:
                raise unknown(self.what or self.flag.lstrip("-").replace("-", " "), str(bad), self.choices)
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise unknown(self.what or self.flag.lstrip("-").replace("-", " "), str(value), self.choices)
            return value
        if self.type is bool:
            if value not in (True, False):
                raise UserError(f"{self.flag} must be on or off (True or False), got {value!r}")
            return value
        if self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            return value
        if ok and self.min is not None:
            ok = value > self.min if self.min_open else value >= self.min
        if ok and self.max is not None:
            ok = value < self.max if self.max_open else value <= self.max
        if not ok:
            raise UserError(f"{self.flag} must be {self.describe()}, got {value!r}")
        return value

    def describe(self) -> str:
        what = "a whole number" if self.type is int else "a number"
        lo = None if self.min is None else f"{'>' if self.min_open else '>='} {self.min:g}"
        hi = None if self.max is None else f"{'<' if self.max_open else '<='} {self.max:g}"
        if lo and hi:
            return f"{what} in {'(' if self.min_open else '['}{self.min:g}, {self.max:g}{')' if self.max_open else ']'}"
        return " ".join(x for x in (what, lo or hi) if x)

    # ------------------------------------------------------------------------------------------- python
    def annotation(self) -> str:
        if self.python:
            return self.python
        base = {int: "int", float: "float", bool: "bool"}.get(self.type, "str")
        if self.folder or self.argument:
            base = "str | Path"
        return f"{base} | None" if self.default is None else base

    def parameter(self, kind=inspect.Parameter.KEYWORD_ONLY) -> inspect.Parameter:
        return inspect.Parameter(self.name, kind, default=self.default, annotation=self.annotation())

    # ------------------------------------------------------------------------------------------- click
    def click(self) -> Callable[[Callable], Callable]:
        import click

        if self.argument:
            akw: dict[str, Any] = {"required": self.required, "metavar": self.metavar}
            if self.nargs is not None:
                akw["nargs"] = self.nargs
            elif not self.required:  # a default given to click, even None, satisfies "required": none given then
                akw["default"] = self.default
            if self.folder:
                akw["type"] = click.Path(file_okay=False)
            return click.argument(self.name, **akw)
        if self.env:
            def to_env(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
                if value is not None:
                    import os

                    os.environ[self.env] = value  # type: ignore[index]

            return click.option(self.flag, default=None, expose_value=False, callback=to_env, metavar="DIR", help=self.help)
        names = [self.flag] + ([self.short] if self.short else [])
        kw: dict[str, Any] = {"help": self.help or None}
        if self.required:  # click checks it only when no default is given, not even None
            kw["required"] = True
        else:
            kw["default"] = self.default
        if self.multiple:
            kw["multiple"] = True
        if self.metavar:
            kw["metavar"] = self.metavar
        if self.off_flag:
            return click.option(f"{self.flag}/{self.off_flag}", default=self.default, help=self.help or None)
        if self.type is bool:
            return click.option(*names, is_flag=True, help=self.help or None)
        if self.choices is not None:
            kw["type"] = click.Choice(list(self.choices))
        elif self.folder:
            kw["type"] = click.Path(file_okay=False)
        elif self.file:
            kw["type"] = click.Path(dir_okay=False)
        elif self.type is int:
            kw["type"] = click.IntRange(min=self.min, max=self.max) if self.min is not None or self.max is not None else int
        elif self.type is float:
            kw["type"] = click.FloatRange(min=self.min, max=self.max, min_open=self.min_open, max_open=self.max_open) \
                if self.min is not None or self.max is not None else float
        if self.default is not None and self.show_default:
            kw["show_default"] = True
        return click.option(*names, **kw)


# ----------------------------------------------------------------------------------------------- the options
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
AMPS = ("none", "bf16", "fp16", "auto")
BN_POLICIES = ("frozen", "train")
AUGMENT = ("auto", "on", "off")
FEATURE_CACHE = ("auto", "memory", "disk", "off")
HEAD_INITS = ("probe", "random")
SCORES = ("probe_cv", "knn_loo", "logme", "leep")
ARCHS = ("mlp", "cnn")
PATH_BN = ("recompute", "interpolate")
CACHE_KINDS = ("images", "downloads", "other")
#: rank --verify's epochs when --epochs is not given: pretrained starts converge fast, init schemes need longer
VERIFY_EPOCHS = {"starts": 2, "inits": 10}
DEFAULT_STRATEGIES = ("scratch", "transfer", "finetune-all")
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps"

_ALL = [
    Option("data", argument=True, help="DATA"),
    # what trains (train, compare)
    Option("strategy", default="transfer", help="scratch | transfer | finetune-last:K | finetune-all | gradual[:E]"),
    Option("strategies", default=",".join(DEFAULT_STRATEGIES), python="str | Sequence[str]",
           help="Comma-separated: scratch, transfer, finetune-last:K, finetune-all, gradual[:E]; an arm may add "
                "+l2sp[:ALPHA[,BETA]] and/or +interpolate (e.g. finetune-all,finetune-all+l2sp,finetune-all+interpolate)."),
    Option("seeds", default="1", python="int | str | Sequence[int]",
           help="Seeds per strategy: a count (--seed, --seed+1, ...) or a list such as 0,1,2; several give mean ± std."),
    Option("restarts", int, 1, min=1, help="Scratch only: train K seeds for --restart-epochs, keep the best on validation, continue it."),
    Option("restart_epochs", int, 1, min=1, help="Epochs per restart trial."),
    Option("interpolate", bool, False,
           help="Keep the best point on the line from the start to the fine-tuned weights, chosen on 20% of the "
                "training images held out of training (WiSE-FT); model.safetensors is that point."),
    Option("head_init", default="probe", choices=HEAD_INITS, what="head init",
           help="Where the new head starts: the linear probe solved on the frozen features (prior and L2 chosen by "
                "cross-validation on the training split), or torchvision's random init."),
    # the model and its start
    Option("model", default="mobilenet_v3_small",
           help="Any torchvision classification model, timm:NAME with the [timm] extra, or custom_3_layer; "
                "not needed with a weights file, whose sidecar .json names its architecture."),
    Option("weights", default="imagenet", python="str | Sequence[str]",
           help="imagenet (torchvision's default weights), none, or PATH to a .pth/.safetensors with a sidecar .json. "
                "compare: a comma-separated list W1,W2,... runs every start x strategy (a grid of starts)."),
    Option("init", help="Init spec for scratch training, e.g. he or 'conv=he_normal,linear=xavier_uniform,bias=zeros'."),
    Option("backbone_lr", float, None, min=0, min_open=True, help="LR of fine-tuned blocks [default: lr/10]."),
    Option("lr_decay", float, 1.0, min=0, max=1, min_open=True,
           help="Discriminative LR: each block further from the head gets this factor more."),
    Option("bn", default="frozen", choices=BN_POLICIES, what="BatchNorm policy",
           help="frozen: pretrained BatchNorm keeps its running statistics; train: they update."),
    Option("reg", default="none", help="none | l2sp[:ALPHA[,BETA]]. l2sp: pull the fine-tuned pretrained layers toward their "
           "start (ALPHA, replaces their weight decay) and the new head toward 0 (BETA); defaults 0.01,0.01. compare: "
           "applies to the fine-tuning arms without a +l2sp of their own."),
    Option("augment", default="auto", choices=AUGMENT, what="augment mode",
           help="Random crops + flips; auto = on for scratch and for fine-tuning from a random head (--head-init random)."),
    Option("feature_cache", default="auto", choices=FEATURE_CACHE, what="feature cache mode", help="Run frozen layers once and train the head on their features."),
    Option("classes", python="str | Sequence[str] | None",
           help="Comma-separated class names to keep (e.g. train on some classes, transfer to others)."),
    # the engine
    Option("epochs", int, 5, min=1, help="Training epochs."),
    Option("batch_size", int, 32, min=1),
    Option("optimizer", default="adamw", choices=OPTIMIZERS),
    Option("lr", float, None, min=0, min_open=True, show_default=False,
           help="Learning rate (of the head, when layers get different rates). [default: per strategy]"),
    Option("momentum", float, 0.9, min=0, max=1, max_open=True),
    Option("weight_decay", float, 1e-4, min=0),
    Option("schedule", default="cosine", choices=SCHEDULES),
    Option("warmup_epochs", float, 0.0, min=0),
    Option("label_smoothing", float, None, min=0, max=1, max_open=True, show_default=False,
           help="[default: 0.1 when the head starts at its linear probe, else 0]"),
    Option("grad_clip", float, 0.0, min=0, show_default=False, help="Max gradient norm (0 = off)."),
    Option("early_stopping", int, 0, min=0, show_default=False, help="Stop after N epochs without a better val loss (0 = off)."),
    Option("seed", int, 0),
    Option("deterministic", bool, False, help="Deterministic algorithms (bit-exact reruns and resumes on CPU)."),
    Option("device", default="auto", help=DEVICE_HELP),
    Option("amp", default="none", choices=AMPS, what="amp mode", help="Mixed precision (auto = bf16 on CUDA)."),
    Option("channels_last", bool, None, off_flag="--no-channels-last",
           help="channels_last memory format [default: auto, on for x86 CPUs where oneDNN runs it ~1.4x faster]."),
    Option("workers", int, 0, min=0, help="DataLoader worker processes."),
    Option("tensorboard", bool, False, help="Also write TensorBoard events to OUT/events."),
    Option("quiet", bool, False, short="-q", help="Only errors and the final result."),
    # the data
    Option("cache_dir", env="WARMSTART_CACHE_DIR",
           help="Folder of the decoded-image cache, reused by the next run on the same data "
                "[default: $WARMSTART_CACHE_DIR, else ~/.cache/warmstart]; 'off': decode in memory."),
    Option("data_root", folder=True, help="Where named data sets (cifar10, mnist, hymenoptera, ...) live or are downloaded to "
                                          "[default: $WARMSTART_DATA_ROOT, else datasets/ in the cache folder]."),
    Option("val_fraction", float, 0.2, min=0, max=1, min_open=True, max_open=True,
           help="Validation share when DATA has no val/ split (stratified, seeded)."),
    Option("subset", int, None, min=1, help="At most N images per class and split (quick runs)."),
    Option("skip_bad_images", bool, False, help="Skip unreadable images with one warning instead of stopping."),
    # the run directory
    Option("out", folder=True, help="Run directory [default: runs/<command>-<time>]."),
    Option("resume", folder=True, help="Continue the run in this directory exactly where its last checkpoint left off."),
    # symmetry
    Option("constant_linear", bool, False, help="Add a third arm, constant-linear, whose constant start extends to fc1."),
    # depth
    Option("arch", default="mlp", choices=ARCHS, help="Plain MLP or plain 3x3 CNN."),
    Option("depth", int, 30, help="Hidden weight layers."),
    Option("width", int, None, help="Units (MLP) or channels (CNN) per layer [default: 128 for mlp, 32 for cnn]."),
    Option("activation", default="relu", help="relu | tanh | sigmoid"),
    Option("arms", default="xavier,he,default,orthogonal,lsuv", python="str | Sequence[str]",
           help="Init schemes to compare (orthogonal gets the activation's gain; lsuv is measured on a training batch)."),
    Option("image_size", int, None, help="Image side in pixels [default: 8 for digits, else 32]."),
    Option("quick", bool, False, help="10 epochs unless --epochs is given (the demo's setting)."),
    # rank
    Option("candidates", python="str | Sequence[str] | None", positional=True, required=True,
           help="Comma-separated starts: weights files, folders of them, imagenet, none (random-init floor), networks "
                "by name (imagenet:ARCH, timm:NAME, none:ARCH; each with its own preprocessing); or init schemes "
                "(he,xavier,default,orthogonal,lsuv) with --model."),
    Option("by", default="probe_cv", choices=SCORES, what="score (--by)", help="The score that orders pretrained candidates."),
    Option("verify", help="Also train each candidate with this strategy (transfer, finetune-all, ...; "
                          "scratch for init schemes) and correlate every score with the real accuracy."),
    # path
    Option("run_a", argument=True, required=True, help="RUN_A: a train run, a compare arm or a compare folder."),
    Option("run_b", argument=True, help="RUN_B: a second run; the path then joins the two ends."),
    Option("points", int, 11, min=2, help="Points on the path, ends included."),
    Option("extend", bool, False, help="Go a little past both ends (t from -0.2 to 1.2): the walls of the basin."),
    Option("max_images", int, None, min=1, help="Evaluate at most N images per split (a fixed random choice) [default: all]."),
    # fetch
    Option("name", argument=True, help="NAME: a data set or a pretrained start (see --list)."),
    Option("mirror", folder=True, help="A folder laid out as the repository's ../shared (data/<archive>, weights/<name>.pth "
                                       "+ .json) [default: $WARMSTART_MIRROR]."),
    Option("list", bool, False, help="List the names and where they would come from."),
    # cache
    Option("max_size", python="str | int | None", metavar="SIZE",
           help="Evict least recently used decoded images until the cache fits in SIZE (20G, 500M, 1.5GiB), then list "
                "[the cap after every run: $WARMSTART_CACHE_MAX, else half of free space + cache]."),
    Option("json", bool, False, help="Print JSON instead of a table."),
    Option("older_than", float, None, min=0, required=True, metavar="DAYS",
           help="Remove entries not used for DAYS days (and temporary files of killed runs)."),
    Option("kind", choices=CACHE_KINDS, multiple=True, python="str | Sequence[str] | None", what="cache entry kind (--kind)",
           help="Only entries of this kind (repeatable) [default: all]."),
    Option("yes", bool, False, short="-y", help="Do not ask (needed when stdin is not a terminal, e.g. in CI)."),
    # inspect
    Option("target", argument=True, required=True, metavar="CHECKPOINT"),
    Option("tol", float, 1e-6, min=0, help="Filters within tol x the layer's largest |weight| count as identical."),
    Option("explain", bool, False, help="A sentence for every layer, not only the flagged ones."),
    # report
    Option("run_dirs", argument=True, required=True, nargs=-1, folder=True, python="Sequence[str | Path]"),
    Option("title", help="The report's title."),
    # predict, export
    Option("run_dir", argument=True, required=True),
    Option("images", argument=True, required=True, nargs=-1, python="Sequence[str | Path]"),
    Option("top_k", int, 5, min=1, help="Classes shown per image."),
    Option("onnx", file=True, required=True, help="The ONNX file to write."),
    Option("opset", int, 17, min=13, max=21, help="ONNX opset version."),
    Option("image", multiple=True, python="Sequence[str | Path] | None",
           help="Image file or folder to check onnxruntime against PyTorch on (repeatable) [default: a few of the run's "
                "validation images]."),
]
OPTIONS: dict[str, Option] = {o.name: o for o in _ALL}

ENGINE = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "warmup_epochs",
          "label_smoothing", "grad_clip", "early_stopping", "seed", "deterministic", "device", "amp", "channels_last",
          "workers", "tensorboard", "quiet")
MODEL = ("model", "weights", "init", "backbone_lr", "lr_decay", "bn", "reg", "augment", "feature_cache", "classes")
DATA = ("cache_dir", "data_root", "val_fraction", "subset", "skip_bad_images")
RUN = ("out", "resume")
#: the options of the engine that only training uses (rank without --verify trains nothing)
TRAINING = tuple(n for n in ENGINE if n not in ("seed", "device", "quiet"))


def _engine(**own: Option) -> list[Option]:
    """The engine's options in --help order, with a command's own declarations of some of them."""
    return [own.get(n, OPTIONS[n]) for n in ENGINE]


def _opts(*names: str) -> list[Option]:
    return [OPTIONS[n] for n in names]


#: symmetry and depth train every layer at one rate, with SGD at a constant rate (the lecture's setting)
_ONE_RATE = dict(lr=OPTIONS["lr"](default=0.01, show_default=True, help="Learning rate (of the head, when layers get different rates)."),
                 optimizer=OPTIONS["optimizer"](default="sgd"), schedule=OPTIONS["schedule"](default="constant"),
                 label_smoothing=OPTIONS["label_smoothing"](default=0.0, show_default=True, help=""))

#: `warmstart cache`'s folder: the option itself, not an environment variable for the process
_CACHE_DIR = OPTIONS["cache_dir"](env=None, metavar="DIR", help="The cache folder [default: $WARMSTART_CACHE_DIR, else "
                                                                "~/.cache/warmstart].")

#: per command: its options, in --help order, with the command's own defaults and help where they differ
COMMANDS: dict[str, list[Option]] = {
    "train": _opts("data", "strategy", "restarts", "restart_epochs", "interpolate", "head_init", *MODEL) + _engine() + _opts(*DATA, *RUN),
    "compare": _opts("data", "strategies", "seeds", *MODEL) + _engine() + _opts(*DATA, *RUN),
    "rank": [OPTIONS["data"](required=True), OPTIONS["candidates"],
             OPTIONS["model"](default=None, help="Architecture of imagenet/none, or of init-scheme candidates (any train model, "
                                                 "or plain_mlp[:DEPTH] / plain_cnn[:DEPTH], the depth experiment's net)."),
             OPTIONS["by"], OPTIONS["verify"]]
            + _engine(epochs=OPTIONS["epochs"](default=None, help=f"Training epochs of --verify [default: {VERIFY_EPOCHS['starts']} for "
                                                                  f"pretrained starts, {VERIFY_EPOCHS['inits']} for init schemes]."),
                      label_smoothing=_ONE_RATE["label_smoothing"])
            + _opts(*DATA, "out"),
    "symmetry": [OPTIONS["data"], OPTIONS["init"](help="Init spec of the random arm [default: conv=he_normal,conv.bias=zeros]."),
                 OPTIONS["constant_linear"],
                 OPTIONS["restarts"](help="Random arm: train K seeds for --restart-epochs, keep the best on validation, continue it."),
                 OPTIONS["restart_epochs"]]
                + _engine(epochs=OPTIONS["epochs"](default=1), **_ONE_RATE)
                + [*_opts("cache_dir", "data_root", "val_fraction"),
                   OPTIONS["subset"](help="At most N images per class and split (quick runs) [default: 250 for symmetry]."),
                   *_opts("skip_bad_images", *RUN)],
    "depth": [OPTIONS["data"](default="digits"), *_opts("arch", "depth", "width", "activation", "arms", "image_size", "quick"),
              OPTIONS["seeds"](type=int, default=1, min=1, python="int",
                               help="Train every arm from N seeds (--seed, --seed+1, ...): mean and range per arm; the reading "
                                    "says what holds in every seed.")]
             + _engine(epochs=OPTIONS["epochs"](default=None, help="Training epochs [default: 30; 10 with --quick]."), **_ONE_RATE)
             + _opts(*DATA, "out"),
    "path": [*_opts("run_a", "run_b", "points", "extend"),
             OPTIONS["bn"](default="recompute", choices=PATH_BN, what="BatchNorm statistics mode (--bn)",
                           help="BatchNorm statistics at every point: re-estimated on the training images, or interpolated "
                                "like the weights."),
             OPTIONS["max_images"], OPTIONS["batch_size"](default=64), OPTIONS["device"],
             OPTIONS["out"](help="Output folder [default: runs/path-<time>; a compare folder's paths go to COMPARE/paths/]."),
             OPTIONS["quiet"]],
    "fetch": [OPTIONS["name"], OPTIONS["mirror"],
              OPTIONS["data_root"](help="Where data sets are unpacked [default: $WARMSTART_DATA_ROOT, else datasets/ in the "
                                        "warmstart cache folder]."), OPTIONS["list"]],
    "cache": [OPTIONS["max_size"], OPTIONS["json"], _CACHE_DIR],
    "cache prune": [OPTIONS["older_than"], OPTIONS["kind"], OPTIONS["json"], _CACHE_DIR],
    "cache clear": [OPTIONS["yes"], OPTIONS["kind"], OPTIONS["json"], _CACHE_DIR],
    "inspect": [OPTIONS["target"], OPTIONS["weights"](default=None, python="str | Path | None",
                                                      help="With a model name: a .pth/.safetensors state_dict of that model."),
                OPTIONS["seed"](help="Seed of a named model's random init."), OPTIONS["tol"], OPTIONS["json"](help="Print the report as JSON."),
                OPTIONS["explain"]],
    "report": [OPTIONS["run_dirs"], OPTIONS["out"](required=True, help="Folder for report.html and report.md."), OPTIONS["title"]],
    "predict": [OPTIONS["run_dir"], OPTIONS["images"], OPTIONS["top_k"], OPTIONS["json"](help="Print JSON instead of text."),
                OPTIONS["device"](default="cpu")],
    "export": [OPTIONS["run_dir"], OPTIONS["onnx"], OPTIONS["opset"], OPTIONS["image"]],
    "demo": [OPTIONS["out"](help="Run directory [default: runs/demo-<time>]."),
             OPTIONS["quick"](help="An even shorter run (smoke test)."), OPTIONS["seed"], OPTIONS["device"],
             OPTIONS["quiet"](help="")],
}
#: the options whose help names the command's own run directory
for _cmd, _declared in COMMANDS.items():
    COMMANDS[_cmd] = [o(help=f"Run directory [default: runs/{_cmd}-<time>].") if o.name == "out" and o is OPTIONS["out"] else o
                      for o in _declared]


def command_options(command: str) -> dict[str, Option]:
    return {o.name: o for o in COMMANDS[command]}


def defaults(command: str) -> dict[str, Any]:
    """The command's options with their defaults (what a call that names none of them gets)."""
    return {o.name: o.default for o in COMMANDS[command] if not o.env}


def check(values: Mapping[str, Any], command: str | None = None) -> None:
    """Every value named in ``values`` checked against its declaration (range, choices, type)."""
    table = command_options(command) if command else OPTIONS
    for name, value in values.items():
        if name in table:
            table[name].check(value)


# ----------------------------------------------------------------------------------------------- generated code
def click_options(command: str) -> Callable[[Callable], Callable]:
    """The click arguments (DATA, RUN_A, ...) and options of ``command``, in --help order."""
    def deco(f: Callable) -> Callable:
        for o in reversed(COMMANDS[command]):
            f = o.click()(f)
        return f
    return deco


def verb(command: str, *, extra: Sequence[inspect.Parameter] = ()) -> Callable[[Callable], Callable]:
    """Give a ``ws.*`` verb ``def f(data=None, **options)`` the command's keywords: its ``__signature__`` (what
    ``help()``, Jupyter and IDEs show), its defaults (filled in before ``f`` runs) and a docstring listing them;
    an unknown keyword is a TypeError naming the closest one, as for any Python function."""
    opts = COMMANDS[command]

    def deco(f: Callable) -> Callable:
        opts_ = [o for o in opts if not o.env]  # --cache-dir: Python sets $WARMSTART_CACHE_DIR itself
        first = [o for o in opts_ if o.argument or o.positional]
        params = [o.parameter(inspect.Parameter.POSITIONAL_OR_KEYWORD) for o in first]
        params += [o.parameter() for o in opts_ if o not in first] + list(extra)
        sig = inspect.Signature(params)

        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any):
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError as e:
                from warmstart.errors import did_you_mean

                bad = next((k for k in kwargs if k not in sig.parameters), None)
                hint = did_you_mean(bad, sig.parameters) if bad else ""
                raise TypeError(f"{f.__name__}(): {e}{hint}") from None
            bound.apply_defaults()
            return f(**bound.arguments)

        wrapper.__signature__ = sig  # type: ignore[attr-defined]
        lines = [f"    {o.name}: {o.help or o.flag}" + (f" [default: {o.default!r}]" if o.default is not None and o.show_default else "")
                 for o in opts_]
        wrapper.__doc__ = (f.__doc__ or "").rstrip() + "\n\n    Keywords (the options of ``warmstart " + command + "``):\n\n" + "\n".join(lines) + "\n"
        return wrapper

    return deco


def given_in_python(command: str, options: Mapping[str, Any]) -> set[str]:
    """The keywords of a Python call whose value differs from the command's default: those named "explicitly"."""
    d = defaults(command)
    return {k for k, v in options.items() if k in d and v != d[k]}


__all__ = ["Option", "OPTIONS", "COMMANDS", "check", "click_options", "verb", "defaults", "given_in_python", "Path"]
