"""The warmstart command line: a thin shell over public functions of the same names.

Every command validates its input before it creates anything, and every problem the user can fix ends as
one line ``error: ...`` on stderr with exit code 2 — never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from warmstart import __version__
from warmstart.cli_options import argv, given
from warmstart.errors import UserError
from warmstart.options import click_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="warmstart")
def cli() -> None:
    """warmstart: where a network starts — weight initialization and transfer learning, run, measured and explained.

    Start with `warmstart demo`: every experiment, briefly, on data the install brings, in one HTML report.
    """


@cli.command(context_settings=CONTEXT)
@click_options("demo")
def demo(**o):
    """Run every experiment briefly, offline, on scikit-learn's bundled digits; print the report's path."""
    from warmstart.api import demo_options

    click.echo(str(demo_options(o).report))


@cli.command(context_settings=CONTEXT)
@click_options("train")
def train(data, **o):
    """Train a classifier on DATA: from scratch, by transfer (frozen backbone, new head) or by fine-tuning.

    DATA is a folder with train/ and val/ (or test/) class subfolders, one folder of class subfolders, a CSV
    (path,label[,split]), or a data set name (digits, cifar10, mnist, hymenoptera, ...; warmstart fetch --list).
    With --resume RUN_DIR it may be left out: the run continues on its own DATA.
    """
    if data is None and not o["resume"]:
        raise click.UsageError("missing argument 'DATA' (or continue a run with --resume RUN_DIR)", click.get_current_context())
    from warmstart.api import train_options

    summary = train_options({"data": data, **o}, given=given(), argv=argv()).summary
    from warmstart.engine.distributed import world

    if world().main:  # under torchrun, one result line, not one per rank
        click.echo(json.dumps({k: summary[k] for k in ("strategy", "model", "best_val_accuracy", "final_val_accuracy",
                                                       "train_seconds", "restarts") if k in summary}))


@cli.command(context_settings=CONTEXT)
@click_options("symmetry")
def symmetry(data, **o):
    """The lecture's symmetry exercise: custom_3_layer from a constant and a random start, filters counted.

    DATA defaults to the unpacked CIFAR-10 (else the cifar10 data set under --data-root); images are resized to
    32x32. --subset defaults to 250 images per class and split.
    """
    from warmstart.api import symmetry_options

    click.echo(symmetry_options({"data": data, **o}, given=given(), argv=argv()).text)


@cli.command(context_settings=CONTEXT)
@click_options("inspect")
def inspect(**o):
    """Symmetry report of a checkpoint, weights file, run directory or model name (e.g. mobilenet_v3_small).

    Per conv/linear layer: filters, distinct filters, max cosine, rank, all-zero filters; duplicates flagged.
    """
    from warmstart.experiments.inspect import format_report
    from warmstart.experiments.inspect import inspect as run_inspect

    result = run_inspect(o["target"], weights=o["weights"], tol=o["tol"], seed=o["seed"])
    click.echo(json.dumps(result, indent=2) if o["json"] else format_report(result, all_explanations=o["explain"]))


@cli.command("depth", context_settings=CONTEXT)
@click_options("depth")
def depth_command(data, **o):
    """Train one deep plain net (no BatchNorm, no residuals) per init scheme and show which ones train.

    DATA defaults to digits (scikit-learn's bundled 8x8 digits). Plain SGD, as He et al. 2015: Adam-like
    optimizers rescale the vanishing gradients and hide the effect.
    """
    from warmstart.api import depth_options

    click.echo(depth_options({"data": data, **o}, argv=argv()).text)


@cli.command(context_settings=CONTEXT)
@click_options("compare")
def compare(data, **o):
    """Train several strategies x seeds on DATA under the same data, preprocessing and budget; write one report.

    OUT gets one sub-directory per run (each a complete train run), summary.json, report.html (one
    self-contained file) and report.md. With --resume RUN_DIR, DATA may be left out; finished runs are kept.
    """
    if data is None and not o["resume"]:
        raise click.UsageError("missing argument 'DATA' (or continue a run with --resume RUN_DIR)", click.get_current_context())
    from warmstart.api import compare_options

    click.echo(compare_options({"data": data, **o}, given=given(), argv=argv()).text)


@cli.command(context_settings=CONTEXT)
@click_options("rank")
def rank(data, **o):
    """Which start? Score candidate starts on DATA's training images in seconds, and optionally check the scores.

    Pretrained candidates get four scores from one frozen pass each: linear-probe CV accuracy, kNN leave-one-out,
    LogME and LEEP. Init schemes get a zero-cost signal-propagation score at init. Writes summary.json and report.html.
    """
    from warmstart.api import rank_options

    click.echo(rank_options({"data": data, **o}, given=given(), argv=argv()).text)


@cli.command("path", context_settings=CONTEXT)
@click_options("path")
def path_command(**o):
    """Loss and accuracy along the straight line between two networks in weight space, and its barrier.

    RUN_A alone: from the run's start (pretrained + probe head, or its random init) to its end. RUN_A RUN_B: between
    the ends of two runs (e.g. two seeds). A compare folder alone: per strategy, between the first two seeds' ends
    and each seed's start -> end, written to COMPARE/paths/, and the compare report gets a section.
    """
    from warmstart.api import path_options

    click.echo(path_options(o, argv=argv()).text)


@cli.command(context_settings=CONTEXT)
@click_options("report")
def report(**o):
    """Rebuild one report from existing run directories (e.g. runs made on different machines)."""
    from warmstart.experiments.report import report as build

    click.echo(str(build(o["run_dirs"], out=o["out"], title=o["title"])))


@cli.command(context_settings=CONTEXT)
@click_options("predict")
def predict(**o):
    """Class probabilities for IMAGES (files or folders) from the model of a finished run.

    RUN_DIR is the --out folder of 'warmstart train' (model.safetensors + model.json), or a weights file with
    its .json. Images are prepared exactly as that run's validation images were.
    """
    from warmstart.experiments.predict import format_predictions
    from warmstart.experiments.predict import predict as run_predict

    results = run_predict(o["run_dir"], o["images"], top_k=o["top_k"], device=o["device"])
    click.echo(json.dumps(results, indent=1) if o["json"] else format_predictions(results))


@cli.command(context_settings=CONTEXT)
@click_options("export")
def export(**o):
    """Export the model of a finished run to ONNX (dynamic batch), checked with onnxruntime against PyTorch.

    The graph takes normalised float32 N x 3 x H x W images; the preprocessing and class names are in its
    metadata. The file is written only once the check passes. Needs: pip install 'warmstart[onnx]'.
    """
    from warmstart.experiments.export import export as run_export

    report = run_export(o["run_dir"], onnx=o["onnx"], opset=o["opset"], images=list(o["image"]) or None)
    click.echo(json.dumps({k: report[k] for k in ("onnx", "bytes", "check_inputs", "max_abs_logit_diff", "same_top1")}))


@cli.command(context_settings=CONTEXT)
@click_options("fetch")
def fetch(**o):
    """Get a data set or a pretrained start by NAME; print its local path (a folder, or the .pth).

    Looked for in the data root, then in the mirror, else downloaded (from $WARMSTART_BASE_URL when set, a server
    laid out as the mirror; else from the data set's home), checked and unpacked. The path works as DATA and as
    --weights; a data set's NAME also works as DATA directly (warmstart train hymenoptera).
    """
    from warmstart.data import fetch as f

    if o["list"]:
        for n, d in f.DATASETS.items():
            click.echo(f"{n:28} data     {d.about}")
        for n, w in f.WEIGHTS.items():
            click.echo(f"{n:28} weights  {w.about}")
        click.echo(f"looked for in: {f.where(o['mirror'], o['data_root'])}")
        return
    if o["name"] is None:
        raise click.UsageError("missing argument 'NAME' (see --list)", click.get_current_context())
    click.echo(str(f.fetch(o["name"], data_root=o["data_root"], mirror=o["mirror"])))


@cli.group("cache", invoke_without_command=True, context_settings=CONTEXT)
@click_options("cache")
@click.pass_context
def cache_command(ctx, **o):
    """List the cache folder: decoded images, downloaded data sets; kind, data set, size, last use.

    Subcommands remove entries: 'prune --older-than DAYS', 'clear'. An entry a running process reads is never removed.
    """
    if ctx.invoked_subcommand is not None:
        if o["max_size"] is not None or o["json"]:
            raise click.UsageError("--max-size and --json go after the subcommand, or without one")
        ctx.obj = {**(ctx.obj or {}), "cache_dir": o["cache_dir"]}
        return
    from warmstart.data.cachestore import cache

    _echo_cache(cache("list", max_size=o["max_size"], cache_dir=o["cache_dir"]), o["json"])


def _echo_cache(report, as_json: bool) -> None:
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.table())


@cache_command.command("prune", context_settings=CONTEXT)
@click_options("cache prune")
@click.pass_context
def cache_prune(ctx, **o):
    """Remove cache entries not used for DAYS days."""
    from warmstart.data.cachestore import cache

    folder = o["cache_dir"] or (ctx.obj or {}).get("cache_dir")
    _echo_cache(cache("prune", older_than=o["older_than"], kind=list(o["kind"]) or None, cache_dir=folder), o["json"])


@cache_command.command("clear", context_settings=CONTEXT)
@click_options("cache clear")
@click.pass_context
def cache_clear(ctx, **o):
    """Remove every cache entry (or every entry of --kind)."""
    from warmstart.data.cachestore import KINDS, cache, count, entries, interactive
    from warmstart.data.cachestore import cache_dir as folder_of
    from warmstart.sizes import human_size

    kind = list(o["kind"])
    folder = folder_of(o["cache_dir"] or (ctx.obj or {}).get("cache_dir"))
    there = [e for e in entries(folder) if not kind or e.kind in {KINDS[k] for k in kind}]
    if not o["yes"] and there:  # nothing to remove: nothing to confirm
        what = f"{count(len(there))}, {human_size(sum(e.size for e in there))}"
        if not interactive():
            raise UserError(f"cache clear would remove {what} from {folder} and stdin is not a terminal to confirm; "
                            "add --yes")
        if not click.confirm(f"remove {what} from {folder}?", default=False):
            click.echo("nothing removed")
            return
    _echo_cache(cache("clear", kind=kind or None, cache_dir=folder if folder is not None else "off"), o["json"])


# ----------------------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Console-script entry: turn every user error into one `error:` line and exit code 2."""
    # library warnings become "warning: ..." lines for this command only; the logger is restored afterwards, so
    # repeated in-process calls (tests, notebooks) neither stack handlers nor hide warnings from other handlers
    logger = logging.getLogger("warmstart")
    before = (logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    # a command's --quiet holds for that command only: restored afterwards, as the logger is (console is looked up,
    # not imported, so --help stays light)
    console = sys.modules.get("warmstart.engine.console")
    was_quiet = bool(getattr(console, "_quiet", False))
    try:
        _main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
        console = sys.modules.get("warmstart.engine.console")
        if console is not None:
            console.set_quiet(was_quiet)


def _main(argv: list[str] | None) -> None:
    if argv is None:  # the console script / python -m warmstart: this process runs one command and exits
        from warmstart import _process

        _process.own()
    try:
        line = ["warmstart", *(sys.argv[1:] if argv is None else [str(a) for a in argv])]  # for config.json
        rv = cli.main(args=argv, prog_name="warmstart", standalone_mode=False, obj={"argv": line})
        if argv is None:
            _process.settled()  # everything is written: exit without walking the heap once more
        sys.exit(rv if isinstance(rv, int) else 0)
    except UserError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:  # pragma: no cover - click >= 8.2
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "warmstart"
        _fail(f"{_lower(e.format_message())} (see '{cmd} --help')", 2)
    except click.ClickException as e:
        _fail(_lower(e.format_message()), 2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _fail("interrupted; a run directory can be continued with --resume DIR", 130)
    except BrokenPipeError:
        sys.exit(0)


def _lower(msg: str) -> str:
    msg = " ".join(msg.split())
    return msg[:1].lower() + msg[1:] if msg else msg


def _fail(msg: str, code: int) -> None:
    msg = " ".join(str(msg).split())  # one line, always
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)
