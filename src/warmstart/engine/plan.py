"""A training plan is a list of phases.

Changing what trains (unfreezing a block, say) starts a new :class:`Phase`: a fresh optimizer and
scheduler are built for it, never a param group added mid-run, so resuming inside a phase and DDP stay
exact. Strategies (``warmstart.transfer.strategies``) turn layer groups into phases; ``engine.fit`` runs
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParamGroup:
    """Parameters (by their names in ``model.named_parameters()``) that train with one learning rate.

    ``weight_decay``: of this group's weight matrices (None: the config's ``weight_decay``); ``anchor``: a pull of
    every parameter toward its start, weight decay toward the start instead of toward 0 (L2-SP,
    ``transfer.prior``; the starts are given to ``fit(..., anchors=...)``; 0: none).
    """

    name: str
    params: list[str]
    lr: float
    weight_decay: float | None = None
    anchor: float = 0.0


@dataclass
class Phase:
    """Epochs during which a fixed set of parameters trains.

    Every parameter not listed in ``groups`` is frozen (``requires_grad=False``) for the phase.
    ``eval_modules`` are module names kept in eval mode while the rest of the model trains (frozen
    BatchNorm keeps its running statistics).
    """

    epochs: int
    groups: list[ParamGroup]
    eval_modules: list[str] = field(default_factory=list)
    name: str = "train"

    @property
    def trainable(self) -> list[str]:
        return [p for g in self.groups for p in g.params]


def single_phase(model, epochs: int, lr: float, name: str = "train") -> list[Phase]:
    """The plan of ordinary training: every parameter trains at one learning rate."""
    names = [n for n, _ in model.named_parameters()]
    return [Phase(epochs=epochs, groups=[ParamGroup("all", names, lr)], name=name)]
