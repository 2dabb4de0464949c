"""The command line's shared options and helpers: the option groups every command takes (data, engine, model,
out), the TrainConfig of a command's options, what was given on the command line, and --resume merging.

Only click and the standard library at import: ``warmstart --help`` and argument errors stay free of torch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import click


def _cache_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:  # read by warmstart.data.diskcache.cache_dir (the library's one source of the folder)
        import os

        os.environ["WARMSTART_CACHE_DIR"] = value


def data_options(f: Callable) -> Callable:
    for opt in reversed([
        click.option("--cache-dir", default=None, expose_value=False, callback=_cache_dir, metavar="DIR",
                     help="Folder of the decoded-image cache, reused by the next run on the same data "
                          "[default: $WARMSTART_CACHE_DIR, else ~/.cache/warmstart]; 'off': decode in memory."),
        click.option("--data-root", type=click.Path(file_okay=False), default=None,
                     help="Where named data sets (cifar10, mnist, hymenoptera, ...) live or are downloaded to "
                          "[default: $WARMSTART_DATA_ROOT, else datasets/ in the cache folder]."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
                     help="Validation share when DATA has no val/ split (stratified, seeded)."),
        click.option("--subset", type=click.IntRange(min=1), default=None, help="At most N images per class and split (quick runs)."),
        click.option("--skip-bad-images", is_flag=True, help="Skip unreadable images with one warning instead of stopping."),
    ]):
        f = opt(f)
    return f


def engine_options(epochs: int = 5, lr: float | None = None, batch_size: int = 32, optimizer: str = "adamw",
                   schedule: str = "cosine", label_smoothing: float | None = 0.0) -> Callable[[Callable], Callable]:
    """The engine's options; ``lr`` or ``label_smoothing`` None: the command's recipe decides (per strategy)."""
    def deco(f: Callable) -> Callable:
        for opt in reversed([
            click.option("--epochs", type=click.IntRange(min=1), default=epochs, show_default=True, help="Training epochs."),
            click.option("--batch-size", type=click.IntRange(min=1), default=batch_size, show_default=True),
            click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default=optimizer, show_default=True),
            click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=lr is not None,
                         help="Learning rate (of the head, when layers get different rates)." + ("" if lr is not None else " [default: per strategy]")),
            click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True),
            click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True),
            click.option("--schedule", type=click.Choice(["constant", "step", "cosine", "onecycle"]), default=schedule, show_default=True),
            click.option("--warmup-epochs", type=click.FloatRange(min=0), default=0.0, show_default=True),
            click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=label_smoothing,
                         show_default=label_smoothing is not None,
                         help=None if label_smoothing is not None else "[default: 0.1 when the head starts at its linear probe, else 0]"),
            click.option("--grad-clip", type=click.FloatRange(min=0), default=0.0, help="Max gradient norm (0 = off)."),
            click.option("--early-stopping", type=click.IntRange(min=0), default=0, help="Stop after N epochs without a better val loss (0 = off)."),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--deterministic", is_flag=True, help="Deterministic algorithms (bit-exact reruns and resumes on CPU)."),
            click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps"),
            click.option("--amp", type=click.Choice(["none", "bf16", "fp16", "auto"]), default="none", show_default=True,
                         help="Mixed precision (auto = bf16 on CUDA)."),
            click.option("--channels-last/--no-channels-last", default=None,
                         help="channels_last memory format [default: auto, on for x86 CPUs where oneDNN runs it ~1.4x faster]."),
            click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader worker processes."),
            click.option("--tensorboard", is_flag=True, help="Also write TensorBoard events to OUT/events."),
            click.option("--quiet", "-q", is_flag=True, help="Only errors and the final result."),
        ]):
            f = opt(f)
        return f
    return deco


def out_options(f: Callable) -> Callable:
    f = click.option("--resume", type=click.Path(file_okay=False), default=None,
                     help="Continue the run in this directory exactly where its last checkpoint left off.")(f)
    return click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory [default: runs/<command>-<time>].")(f)


def engine_config(opts: dict[str, Any]):
    """The TrainConfig of a command's options (None values: the command's own defaults)."""
    from warmstart.engine.config import TrainConfig

    return TrainConfig.from_dict({k: v for k, v in opts.items() if v is not None})


def given() -> set[str]:
    """The options and arguments named on the command line (what a resumed run must agree with)."""
    ctx = click.get_current_context()
    return {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}


def argv() -> list[str] | None:
    """The command line being run (recorded in config.json), passed down from :func:`main`."""
    obj = click.get_current_context().find_root().obj
    return obj.get("argv") if isinstance(obj, dict) else None


def with_resume(command: str) -> Callable[[Callable], Callable]:
    """Merge --resume RUN_DIR (the engine's merge_resume): options come from its config.json; an explicitly
    given option that differs is an error. Also sets --quiet for the command."""

    def deco(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(**opts):
            from warmstart.api import _normalised, _resumed
            from warmstart.engine.console import set_quiet

            opts = _resumed(command, _normalised(opts), given())
            set_quiet(bool(opts.get("quiet")))
            return f(**opts)

        return wrapper

    return deco


# ----------------------------------------------------------------------------------------------- commands


def model_options(f: Callable) -> Callable:
    for opt in reversed([
        click.option("--model", default="mobilenet_v3_small", show_default=True,
                     help="Any torchvision classification model, timm:NAME with the [timm] extra, or custom_3_layer."),
        click.option("--weights", default="imagenet", show_default=True,
                     help="imagenet (torchvision's default weights), none, or PATH to a .pth/.safetensors with a sidecar .json. "
                          "compare: a comma-separated list W1,W2,... runs every start x strategy (a grid of starts)."),
        click.option("--init", default=None, help="Init spec for scratch training, e.g. he or 'conv=he_normal,linear=xavier_uniform,bias=zeros'."),
        click.option("--backbone-lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="LR of fine-tuned blocks [default: lr/10]."),
        click.option("--lr-decay", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
                     help="Discriminative LR: each block further from the head gets this factor more."),
        click.option("--bn", type=click.Choice(["frozen", "train"]), default="frozen", show_default=True,
                     help="frozen: pretrained BatchNorm keeps its running statistics; train: they update."),
        click.option("--augment", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
                     help="Random crops + flips; auto = on for scratch and for fine-tuning from a random head (--head-init random)."),
        click.option("--feature-cache", type=click.Choice(["auto", "memory", "disk", "off"]), default="auto", show_default=True,
                     help="Run frozen layers once and train the head on their features."),
        click.option("--classes", default=None, help="Comma-separated class names to keep (e.g. train on some classes, transfer to others)."),
    ]):
        f = opt(f)
    return f
