"""The start as a prior: L2-SP (Li, Grandvalet & Davoine, ICML 2018), parsed here without torch.

Fine-tuning starts at the pretrained weights ``w0`` and, with ordinary weight decay, pulls every weight toward 0
-- away from the start it was chosen for. L2-SP pulls the pretrained layers back toward ``w0`` instead:

    Omega(w) = alpha/2 * ||w_pre - w0||^2  +  beta/2 * ||w_head||^2

over the pretrained parameters that train (every one, biases and BatchNorm's affine parameters included: a
pull toward their start, unlike one toward 0, does not shrink them) and, for the new head, ordinary L2 on its
weight matrix. ``--reg l2sp[:ALPHA[,BETA]]`` turns it on (defaults :data:`ALPHA` = :data:`BETA` = 0.01).

**It replaces the weight decay, it is not added to it.** The paper replaces the L2 term on the pretrained
weights by L2-SP, so ``--weight-decay`` no longer applies to them (their pull goes to ``w0`` only), and the
head's weight decay becomes ``beta``. **It follows the optimizer's own convention for weight decay**, so that
ALPHA means what ``--weight-decay`` means, the learning-rate schedule and the per-group (discriminative) rates
apply to it unchanged, and nothing is added to the loss (no extra graph, no extra backward):

* ``adamw`` (the default): decoupled, like AdamW's decay: before each step, ``w -= lr_g(t) * alpha * (w - w0)``
  with ``lr_g(t)`` the group's scheduled rate at that step (:class:`~warmstart.engine.optim.AnchorPull`).
  Adding ``alpha * (w - w0)`` to the gradient instead would be divided by Adam's per-weight gradient scale, so the
  pull would be strongest where the data says least (Loshchilov & Hutter's argument for decoupled decay);
* ``sgd``: ``alpha * (w - w0)`` is added to the gradient before the step, as SGD's weight decay adds
  ``wd * w``: the gradient of the paper's penalty, which the paper trains with SGD + momentum.

:func:`apply_reg` writes this into a plan (each :class:`~warmstart.engine.plan.ParamGroup`'s ``weight_decay``
and ``anchor``); ``engine.fit(..., anchors=anchors_of(start, groups))`` applies the pull; :func:`penalty` measures
it at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from warmstart.errors import UserError, did_you_mean

if TYPE_CHECKING:  # parsing needs no torch (the CLI checks --reg before importing it)
    import torch

    from warmstart.engine.plan import Phase

KINDS = ("none", "l2sp")
SYNTAX = "none or l2sp[:ALPHA[,BETA]] (e.g. l2sp, l2sp:0.1, l2sp:0.1,0.01)"
#: the pull toward the pretrained weights, and the head's L2 (the values of the paper's public implementations)
ALPHA = 0.01
BETA = 0.01
#: the group name of the new classification layer (``transfer.groups.layer_groups``)
HEAD = "head"


@dataclass(frozen=True)
class Reg:
    """A parsed ``--reg`` spec other than none: L2-SP with ``alpha`` (toward the start) and ``beta`` (head L2)."""

    alpha: float = ALPHA
    beta: float = BETA
    kind: str = "l2sp"

    @property
    def spec(self) -> str:
        return f"l2sp:{self.alpha:g},{self.beta:g}"

    def __str__(self) -> str:
        return self.spec

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "alpha": self.alpha, "beta": self.beta}


def parse_reg(spec: Any) -> Reg | None:
    """``none`` (or None, "") -> None; ``l2sp[:ALPHA[,BETA]]`` -> :class:`Reg` (ALPHA, BETA finite and >= 0)."""
    if spec is None or isinstance(spec, Reg):
        return spec
    text = str(spec).strip().lower()
    if text in ("", "none"):
        return None
    name, sep, arg = text.partition(":")
    if name not in KINDS:
        raise UserError(f'unknown --reg "{spec}"{did_you_mean(name, KINDS)}; choose {SYNTAX}')
    if name == "none":
        raise UserError(f'--reg none takes no ":{arg}"; choose {SYNTAX}')
    if not sep:
        return Reg()
    parts = [p.strip() for p in arg.split(",")]
    if len(parts) > 2 or not all(parts):
        raise UserError(f'--reg "{spec}": give one or two numbers after "l2sp:", ALPHA[,BETA]; choose {SYNTAX}')
    values = []
    for what, p in zip(("ALPHA (the pull toward the pretrained weights)", "BETA (the new head's L2)"), parts):
        try:
            v = float(p)
        except ValueError:
            v = math.nan
        if not (math.isfinite(v) and v >= 0):
            raise UserError(f'--reg "{spec}": {what} must be a number >= 0, got "{p}"; e.g. l2sp:0.01,0.01')
        values.append(v)
    return Reg(*values) if len(values) == 2 else Reg(alpha=values[0])


def check_reg(reg: Reg | None, strategy: Any) -> None:
    """L2-SP pulls *fine-tuned pretrained* layers toward their start: scratch has no start, transfer fine-tunes none."""
    if reg is None:
        return
    if strategy.from_scratch:
        raise UserError(f"--reg {reg.spec} pulls the fine-tuned layers toward their pretrained weights, but --strategy scratch "
                        "starts from random weights; drop --reg or fine-tune pretrained weights (e.g. --strategy finetune-all)")
    if not strategy.fine_tunes:
        raise UserError(f"--reg {reg.spec} pulls the fine-tuned layers toward their pretrained weights, but --strategy "
                        f"{strategy.spec} trains only the new head; use --weight-decay for it, or fine-tune (e.g. finetune-all)")


def check_interpolate(strategy: Any, head_init: str) -> None:
    """``--interpolate`` walks the line from the run's start (the linear-probe head on the pretrained layers) to its
    end: scratch has no such start (a random point), and from a random head the start predicts nothing."""
    if strategy.from_scratch:
        raise UserError("--interpolate mixes the fine-tuned weights with the pretrained start, but --strategy scratch starts "
                        "from random weights; drop --interpolate or start from pretrained weights (e.g. --strategy finetune-all)")
    if head_init != "probe":
        raise UserError(f"--interpolate mixes the trained weights with the start, but --head-init {head_init} starts the new "
                        "head at random, so the start is no model to mix with; use --head-init probe (the default)")


def apply_reg(phases: Sequence[Phase], reg: Reg | None) -> list[Phase]:
    """The plan with L2-SP written in: every pretrained group (all but the head) has no weight decay and is
    pulled toward its start with ``alpha``; the head's weight decay is ``beta``. Unchanged without ``reg``."""
    if reg is None:
        return list(phases)
    return [replace(ph, groups=[replace(g, weight_decay=reg.beta) if g.name == HEAD else
                                replace(g, weight_decay=0.0, anchor=reg.alpha) for g in ph.groups]) for ph in phases]


def anchors_of(start: Mapping[str, torch.Tensor], groups: Sequence[Any]) -> dict[str, torch.Tensor]:
    """L2-SP's ``w0``: the start's tensors (``start``: the run's state dict as training begins, by name) of every
    parameter of every layer group but the new head, the pretrained values. The same tensors, not copies: the
    linear probe, which sets the head before the start is taken, changes no other group."""
    return {n: start[n] for g in groups if g.name != HEAD for n in g.params}


def penalty(params: Mapping[str, torch.Tensor], anchors: Mapping[str, torch.Tensor], groups: Mapping[str, Sequence[str]],
            reg: Reg) -> dict[str, Any]:
    """summary.json's ``reg``: the spec and the size of each term now, per layer group: ``alpha/2 * ||w - w0||^2``
    over each anchored group's parameters (``penalty``), and ``beta/2 * ||W_head||^2`` (``head_l2``, the head's
    weight matrices: biases are not decayed). In float64."""
    def sq(ts) -> float:
        return float(sum(float(t.detach().double().pow(2).sum()) for t in ts))

    per = {g: reg.alpha / 2 * sq(params[n] - anchors[n].to(params[n].device) for n in names if n in anchors)
           for g, names in groups.items() if g != HEAD and any(n in anchors for n in names)}
    head = reg.beta / 2 * sq(params[n] for n in groups.get(HEAD, ()) if params[n].ndim > 1)
    return {**reg.to_dict(), "penalty": per, "penalty_total": sum(per.values()), "head_l2": head}
