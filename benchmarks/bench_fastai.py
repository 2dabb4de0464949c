"""(d) against fastai: `warmstart train --strategy finetune-all` (its defaults) vs fastai's `fine_tune(10, freeze_epochs=2)`.

Both whole processes, timed from start to exit, in the same run, on the same data view, weights (the shared
state_dict, loaded into torchvision's mobilenet_v3_small on both sides) and seed:

* warmstart: ``warmstart train DATA --strategy finetune-all --weights W`` with every other option at its
  default: whatever warmstart's best fine-tuning recipe is when you run this;
* fastai (benchmarks/fastai_finetune.py): ``vision_learner`` (fastai's cut and head) + ``fine_tune(10,
  freeze_epochs=2)``, fastai's own data pipeline and defaults.

Goals: warmstart's final val accuracy >= fastai's; warmstart's wall time <= half of fastai's.

fastai is not a dependency of warmstart: pass ``--fastai-python`` (a Python with fastai and torch), or set
WARMSTART_FASTAI_PYTHON, or run this with a Python that has fastai (``pip install 'warmstart[bench]'``).
Without fastai the benchmark says so and exits 0 without results.

    python benchmarks/bench_fastai.py [--fastai-python PY] [--epochs N] [--smoke]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

GOALS = {"accuracy_at_least_fastai": True, "wall_fraction_of_fastai": 0.5}


def fastai_python(explicit: str | None) -> str | None:
    """A Python that can import fastai: --fastai-python, $WARMSTART_FASTAI_PYTHON, or this one; None if none can."""
    for py in (explicit, os.environ.get("WARMSTART_FASTAI_PYTHON"), sys.executable):
        try:
            if py and subprocess.run([py, "-c", "import fastai, torchvision"], capture_output=True).returncode == 0:
                return py
        except OSError:  # no such interpreter
            continue
    return None


def main() -> None:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--fastai-python", default=None, help="a Python interpreter with fastai installed")
    p.add_argument("--epochs", type=int, default=None, help="warmstart's --epochs [default: warmstart's own default]")
    p.add_argument("--fastai-epochs", type=int, default=10)
    p.add_argument("--fastai-freeze-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    c.check_inputs(args)
    py = fastai_python(args.fastai_python)
    if py is None:
        print("skipped: fastai is not installed for this Python (pip install fastai), and neither --fastai-python nor "
              "WARMSTART_FASTAI_PYTHON names a Python that has it")
        return
    fa_epochs, fa_freeze = (1, 1) if args.smoke else (args.fastai_epochs, args.fastai_freeze_epochs)
    ws_extra = ["--epochs", 1, "--batch-size", 4] if args.smoke else (["--epochs", args.epochs] if args.epochs else [])
    with c.Workdir(args.workdir) as wd:
        view = c.data_view(args.data, wd / "data", 4 if args.smoke else None)
        out = wd / "warmstart"
        ws = c.warmstart(["train", view, "--weights", args.weights, "--strategy", "finetune-all", "--seed", args.seed, "--out", out,
                          "--quiet", *ws_extra, *c.warmstart_args(args)], **c.threads_env(args))
        ws["run"] = c.read_run(out)
        fa = c.run_process([str(c.BENCH / "fastai_finetune.py"), "--data", view, "--weights", args.weights, "--epochs", fa_epochs,
                            "--freeze-epochs", fa_freeze, "--seed", args.seed, *(["--batch-size", 4] if args.smoke else [])],
                           python=py, **c.threads_env(args))
        fa["result"] = json.loads(fa["stdout"].strip().splitlines()[-1])
        config = json.loads((out / "config.json").read_text())

    s = ws["run"]["summary"]
    # fastai reports a float32 accuracy: compare as numbers of correct validation images
    n_val = s["val_images"]
    ws_acc, fa_acc = s["final_val_accuracy"], round(fa["result"]["final_val_accuracy"] * n_val) / n_val
    result = {
        "images": {"train": s["train_images"], "val": s["val_images"]},
        "warmstart": {"seconds": ws["seconds"], "final_val_accuracy": ws_acc, "best_val_accuracy": s["best_val_accuracy"],
                      "epochs": s["epochs"], "options": config.get("options", {}), "history": ws["run"]["epochs"],
                      "load": [ws["load_before"], ws["load_after"]]},
        "fastai": {"seconds": fa["seconds"], "final_val_accuracy": fa_acc, "epochs": fa_epochs, "freeze_epochs": fa_freeze,
                   "batch_size": fa["result"]["batch_size"], "num_workers": fa["result"]["num_workers"],
                   "load": [fa["load_before"], fa["load_after"]]},
        "wall_fraction_of_fastai": round(ws["seconds"] / fa["seconds"], 3), "accuracy_difference_pp": round(100 * (ws_acc - fa_acc), 2),
        "goals": GOALS,
    }
    result["meets"] = {"accuracy": ws_acc >= fa_acc, "wall_time": result["wall_fraction_of_fastai"] <= GOALS["wall_fraction_of_fastai"]}
    rows = [{"measure": "wall time, whole process (s)", "warmstart": ws["seconds"], "fastai": fa["seconds"],
             "ratio": f"{ws['seconds'] / fa['seconds']:.2f} of fastai's", "goal": "<= 0.5"},
            {"measure": "final val accuracy", "warmstart": ws_acc, "fastai": fa_acc, "ratio": f"{result['accuracy_difference_pp']:+.1f} pp",
             "goal": ">= fastai"},
            {"measure": "epochs", "warmstart": s["epochs"], "fastai": f"{fa_freeze} frozen + {fa_epochs}", "ratio": "", "goal": ""}]
    print(c.table(rows, ["measure", "warmstart", "fastai", "ratio", "goal"]))
    print(f"load average: warmstart {result['warmstart']['load']}, fastai {result['fastai']['load']}")
    print(f"results: {c.write_results('fastai', args, result)}")


if __name__ == "__main__":
    main()
