"""Transfer strategies: which layer groups train, when, and at what learning rate.

A strategy turns the :func:`~warmstart.transfer.groups.layer_groups` of a model into a list of
:class:`~warmstart.engine.plan.Phase` (each phase: a fresh optimizer over exactly the parameters that train
in it; everything else is frozen):

``scratch``
    Everything trains at ``lr`` (use with ``--weights none``).
``transfer``
    Only the head (the new classification layer) trains: a linear probe on frozen pretrained features.
``finetune-last:K``
    The last K blocks below the head and the head train; K is 1 .. the number of groups below the head.
``finetune-all``
    Everything trains.
``gradual[:E]``
    ULMFiT-style gradual unfreezing: ``transfer`` for E epochs (default 1), then one more block unfrozen
    from the top every E epochs, each step a new phase, until the epochs run out; once every block is
    unfrozen the last phase takes the remaining epochs.

A strategy is only which layers train and when: an *arm* of ``compare`` (or ``train``'s ``--strategy``) may add
``+l2sp[:ALPHA[,BETA]]`` and ``+interpolate`` to it, which :func:`~warmstart.transfer.spec.parse_arm` reads into
an :class:`~warmstart.transfer.spec.Arm` (``--reg`` and ``--interpolate`` of one run).

**Discriminative learning rates.** The head trains at ``lr``. Blocks train at ``backbone_lr`` (default
``lr / 10`` for the fine-tuning strategies) times ``lr_decay ** d``, where d is the block's distance below
the head counted from 0: the block just under the head gets ``backbone_lr``, the one below it
``backbone_lr * lr_decay``, and so on down to the stem. ``scratch`` trains everything at ``lr``.

**BatchNorm and frozen groups.** A frozen group is listed whole in ``Phase.eval_modules``, so it computes
exactly the function it computes at evaluation: BatchNorm uses (and keeps) its running statistics, dropout
and stochastic depth are off. That is also what makes a run on cached features (``transfer.features``)
train identically to one on images. With ``bn="frozen"`` (the default) the BatchNorm layers of trainable
*pretrained* groups are listed too: they keep the pretrained running statistics, while their affine weight
and bias still train. Small fine-tuning batches would otherwise drag those statistics to noisy per-batch
estimates (the bug of the classic PyTorch transfer-learning tutorial). ``bn="train"`` lets trainable
groups update their statistics. Without pretrained weights (``pretrained=False``), or with ``scratch``,
trainable BatchNorms always train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from warmstart.engine.plan import ParamGroup, Phase
from warmstart.errors import UserError, did_you_mean
from warmstart.options import BN_POLICIES, OPTIONS  # noqa: F401  (declared once, with every option)
from warmstart.options import check as check_options

if TYPE_CHECKING:  # parsing a strategy needs no torch (the CLI checks --strategy before importing it)
    from warmstart.transfer.groups import LayerGroup

KINDS = ("scratch", "transfer", "finetune-last", "finetune-all", "gradual")
SYNTAX = ("scratch", "transfer", "finetune-last:K", "finetune-all", "gradual[:E]")
#: other spellings of a strategy's name, accepted everywhere a strategy is read (Python keywords write ``_``)
ALIASES = {"finetune_all": "finetune-all", "finetune_last": "finetune-last", "fine-tune-all": "finetune-all",
           "fine-tune-last": "finetune-last", "fine_tune_all": "finetune-all", "fine_tune_last": "finetune-last"}
#: the fine-tuned blocks' rate relative to the head's when --backbone-lr is not given
BACKBONE_LR_FACTOR = 0.1


def backbone_rate(lr: float, backbone_lr: float | None = None) -> float:
    """The learning rate of fine-tuned blocks (before ``lr_decay``): ``backbone_lr``, else ``lr`` x BACKBONE_LR_FACTOR."""
    return backbone_lr if backbone_lr is not None else lr * BACKBONE_LR_FACTOR


@dataclass(frozen=True)
class Strategy:
    """A parsed strategy spec. ``k``: blocks of ``finetune-last:K``; ``every``: epochs per step of ``gradual``."""

    kind: str
    k: int | None = None
    every: int | None = None

    @property
    def spec(self) -> str:
        return f"finetune-last:{self.k}" if self.kind == "finetune-last" else \
            f"gradual:{self.every}" if self.kind == "gradual" else self.kind

    @property
    def needs_pretrained(self) -> bool:
        """Whether the strategy only makes sense from pretrained weights (all but ``scratch``)."""
        return self.kind != "scratch"

    @property
    def from_scratch(self) -> bool:
        """``scratch``: a random start, every layer trains from the first epoch."""
        return self.kind == "scratch"

    @property
    def head_only(self) -> bool:
        """``transfer``: only the new head ever trains."""
        return self.kind == "transfer"

    @property
    def fine_tunes(self) -> bool:
        """Pretrained blocks train (at the backbone learning rate): finetune-last, finetune-all, gradual."""
        return self.kind in ("finetune-last", "finetune-all", "gradual")

    @property
    def keeps_frozen_layers(self) -> bool:
        """Some pretrained layers stay frozen through the run (what a feature cache can serve)."""
        return self.kind in ("transfer", "finetune-last", "gradual")

    def __str__(self) -> str:
        return self.spec

    # ------------------------------------------------------------------ the plan

    def phases(
        self,
        groups: list[LayerGroup],
        *,
        epochs: int,
        lr: float,
        backbone_lr: float | None = None,
        lr_decay: float = OPTIONS["lr_decay"].default,
        bn: str = OPTIONS["bn"].default,
        pretrained: bool = True,
    ) -> list[Phase]:
        """The training plan over ``groups`` (from ``layer_groups``; the head last) for ``epochs`` epochs."""
        if lr is None:
            raise UserError("--lr must be a number > 0, got None")
        check_options({"epochs": epochs, "lr": lr, "backbone_lr": backbone_lr, "lr_decay": lr_decay, "bn": bn})
        n = self._blocks(groups)
        base = backbone_rate(lr, backbone_lr)

        def lr_of(i: int) -> float:  # i: index in groups
            if self.kind == "scratch" or i == n:
                return lr
            return base * lr_decay ** (n - 1 - i)

        def phase(n_trainable_blocks: int, ep: int, name: str) -> Phase:
            first = n - n_trainable_blocks  # groups[first:] train
            train = list(range(first, n + 1))
            eval_modules = [m for g in groups[:first] for m in g.modules if m not in g.params]
            if bn == "frozen" and pretrained and self.kind != "scratch":
                eval_modules += [b for i in train[:-1] for b in groups[i].batchnorms]
            return Phase(
                epochs=ep,
                groups=[ParamGroup(groups[i].name, list(groups[i].params), lr_of(i)) for i in train if groups[i].params],
                eval_modules=eval_modules,
                name=name,
            )

        if self.kind in ("scratch", "finetune-all"):
            return [phase(n, epochs, self.kind)]
        if self.kind == "transfer":
            return [phase(0, epochs, "transfer")]
        if self.kind == "finetune-last":
            return [phase(self.k or 0, epochs, self.spec)]
        return [phase(j, ep, "head" if j == 0 else f"unfreeze {groups[n - j].name}") for j, ep in self._gradual(n, epochs)]

    def frozen_prefix(self, groups: list[LayerGroup], *, epochs: int | None = None) -> list[LayerGroup]:
        """The leading groups frozen for the whole run (what a feature cache may precompute).

        ``gradual`` needs ``epochs``: how far unfreezing gets depends on it.
        """
        n = self._blocks(groups)
        if self.kind in ("scratch", "finetune-all"):
            return []
        if self.kind == "transfer":
            return groups[:n]
        if self.kind == "finetune-last":
            return groups[: n - (self.k or 0)]
        if epochs is None:
            raise ValueError("frozen_prefix of a gradual strategy needs epochs")
        _check_positive_int("epochs", epochs)
        return groups[: n - self._gradual(n, epochs)[-1][0]]

    # ------------------------------------------------------------------ helpers

    def _blocks(self, groups: list[LayerGroup]) -> int:
        """Number of groups below the head, validating ``groups`` and K against it."""
        if not groups or groups[-1].name != "head":
            raise ValueError("strategies need layer_groups(model): a non-empty list ending with the head group")
        n = len(groups) - 1
        if self.kind == "finetune-last" and not 1 <= (self.k or 0) <= n:
            raise UserError(
                f"finetune-last:{self.k}: K must be 1..{n}, the number of layer groups below the head "
                f"({', '.join(g.name for g in groups[:-1])}); use finetune-all to train everything"
            )
        return n

    def _gradual(self, n: int, epochs: int) -> list[tuple[int, int]]:
        """(blocks unfrozen, epochs) per phase of gradual unfreezing."""
        every = self.every or 1
        out, left, j = [], epochs, 0
        while left > 0:
            ep = left if j == n else min(every, left)
            out.append((j, ep))
            left, j = left - ep, j + 1
        return out


def parse_strategy(spec: str, *, quoted: str | None = None) -> Strategy:
    """Parse ``scratch | transfer | finetune-last:K | finetune-all | gradual[:E]`` (any case, any of ALIASES).

    ``quoted``: the text error messages quote, when ``spec`` is part of it (the arm ``finetune-all+l2sp``)."""
    quoted = spec if quoted is None else quoted
    text = str(spec).strip().lower()
    if "+" in text:
        raise UserError(f'strategy "{quoted}": "+{text.partition("+")[2].strip()}" is an arm\'s modifier (train\'s --strategy '
                        f'and compare\'s --strategies take one), not part of a strategy; give one of: {", ".join(SYNTAX)}')
    return _parse_base(text, quoted)


def _parse_base(text: str, spec: str) -> Strategy:
    name, sep, arg = text.partition(":")
    name = ALIASES.get(name, name)
    if name not in KINDS:
        hint = did_you_mean(name, KINDS)
        raise UserError(f'unknown strategy "{spec}"{hint}; choose one of: {", ".join(SYNTAX)}')
    if name in ("scratch", "transfer", "finetune-all"):
        if sep:
            raise UserError(f'strategy "{name}" takes no ":{arg}"; choose one of: {", ".join(SYNTAX)}')
        return Strategy(name)
    if name == "finetune-last":
        if not arg:
            raise UserError('finetune-last needs the number of blocks to train, e.g. "finetune-last:2"')
        return Strategy(name, k=_parse_count(arg, spec, "K (blocks to fine-tune)"))
    return Strategy(name, every=_parse_count(arg, spec, "E (epochs per unfreezing step)") if sep else 1)


def _parse_count(arg: str, spec: str, what: str) -> int:
    try:
        v = int(arg)
    except ValueError:
        v = 0
    if v < 1:
        raise UserError(f'strategy "{spec}": {what} must be a positive integer, got "{arg}"')
    return v


def _check_positive_int(what: str, v) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise UserError(f"{what} must be a positive integer, got {v!r}")

