"""Every option declared once (warmstart.options): each command's CLI options are the Python verb's keywords
(same name, type and default), every one of them reaches the run (config.json records it, and the values
given arrive in the parsed config), and an option that would do nothing is refused with one error line."""

from __future__ import annotations

import inspect
import json

import click
import pytest

import warmstart as ws
from _runs import cli, summary
from warmstart.cli import cli as group
from warmstart.options import COMMANDS

VERBS = {"train": ws.train, "compare": ws.compare, "rank": ws.rank, "symmetry": ws.symmetry, "depth": ws.depth,
         "demo": ws.demo, "path": ws.path}
#: click's parameter types -> the Python type a keyword must then accept (its annotation names it)
PY_TYPE = {click.INT: "int", click.FLOAT: "float", click.STRING: "str", click.BOOL: "bool"}


def _py_type(param: click.Parameter) -> str:
    t = param.type
    if param.is_flag if isinstance(param, click.Option) else False:
        return "bool"
    if isinstance(t, click.IntRange):
        return "int"
    if isinstance(t, click.FloatRange):
        return "float"
    if isinstance(t, (click.Choice, click.Path)):
        return "str"
    return PY_TYPE[t]


def _cli_params(command: str) -> list[click.Parameter]:
    """The command's parameters that carry a value (--help and --cache-dir, which only sets
    $WARMSTART_CACHE_DIR for the process, carry none)."""
    return [p for p in group.commands[command].params if p.expose_value]


@pytest.mark.parametrize("command", sorted(VERBS))
def test_every_cli_option_is_the_python_keyword_of_the_same_name_type_and_default(command):
    sig = inspect.signature(VERBS[command])
    params = _cli_params(command)
    parsed = group.commands[command].make_context(command, [], resilient_parsing=True).params  # nothing given
    assert {p.name for p in params} == {o.name for o in COMMANDS[command] if not o.env}  # all of them, from one table
    for p in params:
        assert p.name in sig.parameters, f"warmstart {command} {p.opts[0]} has no keyword in ws.{command}"
        kw = sig.parameters[p.name]
        cli_default = parsed[p.name]  # what the command gets when the option is not on the command line
        assert kw.default == cli_default, f"{command} {p.name}: Python default {kw.default!r}, CLI {cli_default!r}"
        assert _py_type(p) in str(kw.annotation), f"{command} {p.name}: {kw.annotation} does not take {_py_type(p)}"
    doc = VERBS[command].__doc__
    assert all(f"    {p.name}: " in doc for p in params)  # the docstring lists every keyword


def test_python_keywords_are_checked_as_the_command_line_checks_its_options(tmp_path):
    with pytest.raises(TypeError, match='unexpected keyword.*did you mean "batch_size"'):
        ws.train("digits", batchsize=8)
    for bad, message in ((dict(batch_size=0), "--batch-size must be a whole number >= 1, got 0"),
                         (dict(val_fraction=1.0), r"--val-fraction must be a number in \(0, 1\), got 1.0"),
                         (dict(optimizer="adamm"), 'unknown optimizer "adamm" \\(did you mean "adamw"\\?\\)'),
                         (dict(bn="froze"), 'unknown BatchNorm policy "froze"')):
        with pytest.raises(ws.UserError, match=message):
            ws.train("digits", out=tmp_path / "never", **bad)
    with pytest.raises(ws.UserError, match="--momentum must be a number in \\[0, 1\\)"):
        ws.depth("digits", momentum=1.0, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------- the options reach the run
TRAINING = ["--epochs", "1", "--batch-size", "8", "--optimizer", "sgd", "--lr", "0.02", "--momentum", "0.8",
            "--weight-decay", "0.001", "--schedule", "constant", "--warmup-epochs", "0.5", "--label-smoothing", "0.05",
            "--grad-clip", "2", "--early-stopping", "3", "--seed", "4", "--device", "cpu", "--quiet"]
SET = {"batch_size": 8, "optimizer": "sgd", "lr": 0.02, "momentum": 0.8, "weight_decay": 0.001, "schedule": "constant",
       "warmup_epochs": 0.5, "label_smoothing": 0.05, "grad_clip": 2.0, "early_stopping": 3, "seed": 4, "device": "cpu"}


def _config(run) -> dict:
    return json.loads((run / "config.json").read_text())


def _recorded(command: str, options: dict) -> None:
    names = {o.name for o in COMMANDS[command] if not o.env}
    assert names <= set(options), f"config.json of {command} lacks {sorted(names - set(options))}"


@pytest.mark.parametrize("command, args", [
    ("train", ["digits", "--model", "custom_3_layer", "--weights", "none", "--strategy", "scratch", "--subset", "4"]),
    ("compare", ["digits", "--model", "custom_3_layer", "--weights", "none", "--strategies", "scratch", "--subset", "4"]),
])
def test_train_and_compare_record_every_option_and_train_with_the_given_ones(tmp_path, command, args):
    out = tmp_path / command
    assert cli(command, *args, *TRAINING, "--out", out) == 0
    config = _config(out)
    _recorded(command, config["options"])
    got = config["train_config"]
    assert {k: got[k] for k in SET} == SET and got["epochs"] == 1  # parsed into the TrainConfig the arms trained with
    arm = summary(out if command == "train" else out / "scratch-seed4")  # --seed 4: the first seed
    assert (arm["lr"], arm["label_smoothing"]) == (0.02, 0.05)  # and trained with


def test_symmetry_and_depth_record_every_option_and_train_with_the_given_ones(tmp_path):
    assert cli("depth", "digits", "--arms", "he", "--depth", "3", *TRAINING, "--out", tmp_path / "depth") == 0
    config = _config(tmp_path / "depth")
    _recorded("depth", config["options"])
    assert {k: config["train"][k] for k in SET} == SET
    assert cli("symmetry", "digits", "--subset", "2", "--epochs", "1", "--lr", "0.02", "--optimizer", "adamw",
               "--momentum", "0.5", "--device", "cpu", "--quiet", "--out", tmp_path / "sym") == 0
    _recorded("symmetry", _config(tmp_path / "sym")["options"])
    s = json.loads((tmp_path / "sym" / "summary.json").read_text())
    assert (s["lr"], s["optimizer"], s["epochs"]) == (0.02, "adamw", 1)


def test_rank_records_every_option_and_verify_trains_with_the_given_ones(tmp_path):
    out = tmp_path / "rank"
    assert cli("rank", "digits", "--model", "plain_mlp:3", "--candidates", "he,xavier", "--verify", "scratch",
               "--subset", "10", *TRAINING, "--out", out) == 0
    _recorded("rank", _config(out)["options"])
    # --verify of a plain net runs the depth experiment, whose own recipe (SGD, lr 0.01, momentum 0.9) yields to
    # every training option named on the command line
    verify = _config(out / "verify")["train"]
    assert {k: verify[k] for k in SET if k != "seed"} == {k: v for k, v in SET.items() if k != "seed"}


@pytest.mark.parametrize("option", [["--lr", "0.1"], ["--optimizer", "sgd"], ["--epochs", "3"], ["--tensorboard"]])
def test_rank_refuses_training_options_without_verify(tmp_path, option, capsys):
    out = tmp_path / "rank"
    assert cli("rank", "digits", "--model", "plain_mlp:3", "--candidates", "he", *option, "--out", out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + option[0]) and "--verify" in err and err.count("\n") == 1
    assert not out.exists()


#: the command-line-only options of fetch and cache: how the command prints or asks, not what the verb does
PRINTING = {"list", "json", "yes"}


@pytest.mark.parametrize("command, verb", [("fetch", ws.fetch), ("cache", ws.cache), ("cache prune", ws.cache),
                                           ("cache clear", ws.cache)])
def test_fetch_and_cache_options_are_the_python_keywords_of_the_same_default(command, verb):
    """fetch and cache (and its subcommands) take their options from options.COMMANDS too: each one, apart from
    how the command prints, is a keyword of ws.fetch / ws.cache with the same default."""
    click_cmd = group.commands[command.split()[0]]
    if " " in command:
        click_cmd = click_cmd.commands[command.split()[1]]
    params = {p.name: p for p in click_cmd.params if p.expose_value}
    assert set(params) == {o.name for o in COMMANDS[command]}
    sig = inspect.signature(verb)
    parsed = click_cmd.make_context(command, [], resilient_parsing=True).params
    for name in set(params) - PRINTING:
        assert name in sig.parameters, f"warmstart {command} --{name} has no keyword in ws.{verb.__name__}"
        if isinstance(params[name], click.Argument) and sig.parameters[name].default is inspect.Parameter.empty:
            continue  # NAME: required in Python; the command line leaves it out only with --list
        default = parsed[name] if parsed[name] != () else None  # a repeatable option given no times: ()
        assert sig.parameters[name].default == default, (command, name)


def _commands(cmd: click.Command, name: str = ""):
    """Every command and subcommand of the CLI, by its name in options.COMMANDS ("cache prune")."""
    if name:
        yield name, cmd
    for sub_name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, f"{name} {sub_name}".strip())


def test_no_command_declares_an_option_outside_the_table():
    """Every parameter of every command (and subcommand) of the CLI comes from options.COMMANDS: its name, type,
    default and help are declared once, there (DATA arguments too)."""
    seen = set()
    for name, cmd in _commands(group):
        if isinstance(cmd, click.Group) and name not in COMMANDS:
            continue
        seen.add(name)
        declared = {o.name: o for o in COMMANDS[name] if not o.env}
        params = {p.name: p for p in cmd.params if p.expose_value}
        assert set(params) == set(declared), (name, set(params) ^ set(declared))
        parsed = cmd.make_context(name, [], resilient_parsing=True).params  # what a command line that names none gets
        for p in params.values():
            if isinstance(p, click.Option) and not p.multiple and p.name != "data":
                assert parsed[p.name] == declared[p.name].default, (name, p.name, parsed[p.name])
    assert seen == set(COMMANDS)


@pytest.mark.parametrize("args, missing", [(["inspect"], "missing argument 'CHECKPOINT'"), (["path"], "missing argument 'RUN_A'"),
                                           (["cache", "prune"], "missing option '--older-than'"),
                                           (["export", "run"], "missing option '--onnx'")])
def test_a_required_option_or_argument_is_enforced_by_the_command_line(args, missing, capsys):
    """A required declaration gives click no default (not even None), so click itself says what is missing."""
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {missing}") and err.count("\n") == 1
