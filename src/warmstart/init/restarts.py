"""Best of K random starts: train K inits briefly, keep the best on validation, continue only that one.

A random init is one draw; some draws train better than others. :func:`best_of_k` builds the model for
the seeds ``seed, seed + 1, ..., seed + K - 1``, trains each for a short budget (``--restart-epochs``,
default 1), and keeps the model with the highest validation accuracy after it (ties: the lowest seed).
The caller then continues training that model -- its trained weights, with a fresh optimizer -- for the
full budget (``--epochs``), so the chosen start trains ``restart_epochs + epochs`` epochs in all.

Only the init differs between the K trials: they see the same data in the same order (the engine's
``--seed``), so the spread of their accuracies is the spread due to the starting point alone. The
chosen seed was picked on the validation split, so the final validation accuracy of a best-of-K run
is optimistic compared with a single start; judge it on a separate test split.

``warmstart symmetry --restarts K`` applies it to the random arm and ``warmstart train --restarts K``
to scratch training (a pretrained model has one start). Both report
``{"k", "val_accuracy": {"min", "median", "max"}, "chosen_seed", "per_seed": [{"seed", "val_accuracy"}]}``
as ``summary.json["restarts"]``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from warmstart.engine.console import log
from warmstart.errors import UserError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Trial:
    """One start: its seed and its validation accuracy after the short budget."""

    seed: int
    val_accuracy: float


@dataclass
class BestOfK:
    """The K trials and the chosen one's model (trained for the short budget)."""

    trials: list[Trial]
    chosen: Trial
    model: nn.Module = field(repr=False)

    @property
    def k(self) -> int:
        return len(self.trials)

    def summary(self) -> dict[str, Any]:
        """``summary.json["restarts"]``: K, min/median/max validation accuracy, the chosen seed, every trial."""
        accs = [t.val_accuracy for t in self.trials]
        return {"k": self.k,
                "val_accuracy": {"min": min(accs), "median": statistics.median(accs), "max": max(accs)},
                "chosen_seed": self.chosen.seed,
                "per_seed": [{"seed": t.seed, "val_accuracy": t.val_accuracy} for t in self.trials]}


def check_restarts(restarts: int, restart_epochs: int) -> None:
    """Validate --restarts K (>= 1) and --restart-epochs (>= 1) at the edge."""
    for flag, value in (("restarts", restarts), ("restart-epochs", restart_epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"--{flag} must be a whole number >= 1, got {value!r}")


def best_of_k(k: int, seed: int, build: Callable[[int], nn.Module],
              train_trial: Callable[[nn.Module, int], float]) -> BestOfK:
    """Build and briefly train ``k`` starts (seeds ``seed .. seed + k - 1``); keep the best.

    ``build(seed)`` returns a freshly initialised model; ``train_trial(model, seed)`` trains it in place
    for the short budget and returns its validation accuracy. Only the best model so far is kept.
    """
    check_restarts(k, 1)
    trials: list[Trial] = []
    best: Trial | None = None
    best_model: nn.Module | None = None
    for i in range(k):
        s = seed + i
        model = build(s)
        acc = float(train_trial(model, s))
        trial = Trial(s, acc)
        trials.append(trial)
        log(f"restart {i + 1}/{k}: seed {s}, val accuracy {acc:.4f}")
        if best is None or acc > best.val_accuracy:
            best, best_model = trial, model
    assert best is not None and best_model is not None
    result = BestOfK(trials, best, best_model)
    stats = result.summary()["val_accuracy"]
    log(f"best of {k}: seed {best.seed} (val accuracy {best.val_accuracy:.4f}; min {stats['min']:.4f}, "
        f"median {stats['median']:.4f}, max {stats['max']:.4f}); continuing it")
    return result
