"""Initialising a model from an init spec, including LSUV, the scheme that needs data.

Every scheme of :mod:`warmstart.init.spec` (``he``, ``xavier``, ``orthogonal(1.414)``, ``default``, ...)
sets the weight scale from a layer's shape alone. LSUV (Mishkin & Matas 2016, :func:`~warmstart.init.lsuv.lsuv_init`)
*measures* it instead -- orthonormal weights, then each layer rescaled until its output has unit variance --
so it needs **a batch of real, preprocessed training inputs**. This module is the one place that knows
that: :func:`init_model` takes the spec text ``lsuv`` (alone: it initialises every Linear/Conv layer of
the model) together with such a batch, and any other spec without one.

Commands that have data pass one training batch (``--batch-size`` images drawn with ``--seed``, see
:func:`sample_batch`), so ``--init lsuv`` works for ``warmstart depth`` and ``warmstart train --strategy
scratch``; where there is no data, asking for LSUV is a :class:`~warmstart.errors.UserError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from warmstart.errors import UserError
from warmstart.init.lsuv import LSUVLayer, lsuv_init
# check_init and is_lsuv are torch-free, in init.spec (the CLI checks --init with them); re-exported for the callers here
from warmstart.init.spec import (LSUV, InitSpec, InitTable, apply_init, as_generator, check_init,  # noqa: F401
                                 is_lsuv)


@dataclass
class InitResult:
    """What :func:`init_model` did: the spec, and either apply_init's table or LSUV's per-layer results."""

    spec: str
    table: InitTable | None = None
    lsuv: list[LSUVLayer] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.lsuv is not None:
            return {"spec": self.spec, "lsuv": [layer._asdict() for layer in self.lsuv]}
        return {"spec": self.spec, "params": self.table.to_dicts() if self.table is not None else []}


def init_model(model: nn.Module, spec: InitSpec | str, *, batch: torch.Tensor | None = None,
               generator: torch.Generator | int | None = None, tol: float = 0.1, max_iters: int = 10) -> InitResult:
    """Initialise ``model`` in place by ``spec``.

    ``spec`` ``"lsuv"`` runs :func:`~warmstart.init.lsuv.lsuv_init` on ``batch`` (required: real inputs,
    preprocessed exactly as in training, on the model's device or the CPU) with ``tol``/``max_iters``;
    it may issue :class:`~warmstart.init.lsuv.LSUVWarning`. Any other spec goes to
    :func:`~warmstart.init.spec.apply_init` and ``batch`` is not used. ``generator`` (a
    ``torch.Generator`` or an int seed) makes either reproducible.
    """
    spec = check_init(spec)
    if spec == LSUV:
        if batch is None:
            raise UserError("init lsuv needs a batch of training inputs to measure each layer's output variance; "
                            "use it where there is data (warmstart depth, warmstart train --strategy scratch) "
                            "or call init_model(model, 'lsuv', batch=x)")
        return InitResult(LSUV, lsuv=lsuv_init(model, batch, tol=tol, max_iters=max_iters, generator=as_generator(generator)))
    return InitResult(str(spec), table=apply_init(model, spec, generator=generator))


def sample_batch(dataset: Dataset, n: int, *, seed: int = 0, normalize: nn.Module | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of ``dataset`` (all of them if it has fewer), drawn without replacement with ``seed``.

    Returns ``(x, y)`` stacked on the CPU, ``x`` passed through ``normalize`` (e.g. the
    :class:`~warmstart.data.Normalizer` training uses) so it is what the model sees in training.
    The global RNG is not touched.
    """
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise UserError("cannot draw a batch from an empty data set")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"batch size must be an integer >= 1, got {n!r}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[: min(n, size)]
    items = [dataset[int(i)] for i in order]
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    y = torch.as_tensor([int(item[1]) for item in items])
    if normalize is not None:
        buffer = next(iter(normalize.buffers()), None)
        with torch.no_grad():
            x = normalize(x.to(buffer.device) if buffer is not None else x).cpu()
    return x, y
