"""One model registry: every name ``--model`` accepts, and one way to build it.

Names: torchvision's classification models (``resnet18``, ``mobilenet_v3_small``, ...), timm models written
``timm:NAME`` (``pip install 'warmstart[timm]'``), and warmstart's own (:data:`warmstart.models.MODELS`,
e.g. ``custom_3_layer``). :func:`get_model` is the one public door (``ws.get_model``, also spelled
``ws.create_model``): ``create_model(name, num_classes, resolve_weights(weights, name))`` with the same checks
(did-you-mean for an unknown name, strict shape checks of the weights) as ``warmstart train`` and
``warmstart inspect``; a weights file's sidecar names its architecture, so ``name`` may then be left out.
"""

from __future__ import annotations

from torch import nn

from warmstart.errors import UserError
from warmstart.transfer.backbones import create_model
from warmstart.transfer.candidates import model_for
from warmstart.transfer.weights import TIMM_PREFIX, check_arch, own_models, resolve_weights, torchvision_archs

#: torchvision's default head (ImageNet)
IMAGENET_CLASSES = 1000


def list_models(*, timm: bool = False) -> list[str]:
    """Every model name: warmstart's own, then torchvision's (sorted); with ``timm=True`` also ``timm:NAME``
    for every timm model (needs the timm extra)."""
    names = sorted(own_models()) + sorted(torchvision_archs())
    if timm:
        from warmstart.transfer.weights import import_timm

        names += [TIMM_PREFIX + n for n in import_timm().list_models()]
    return names


def get_model(name: str | None = None, num_classes: int | None = None, *, weights: str = "none") -> nn.Module:
    """The model ``name`` for ``num_classes`` classes, started from ``weights`` (``none`` | ``imagenet`` | PATH).

    ``num_classes=None`` keeps the pretrained head; without pretrained weights it is the model's own default
    (torchvision's: the 1000 ImageNet classes; warmstart's: :attr:`~warmstart.models.ModelEntry.num_classes`).
    ``name=None`` with a weights file: the architecture its sidecar names (as ``--model`` left out does).
    """
    name = model_for(name, [weights], given=name is not None)
    if name is None:
        raise UserError("get_model needs a model name (e.g. mobilenet_v3_small), or weights=PATH of a file with its sidecar .json")
    check_arch(name)
    w = resolve_weights(weights, name)
    if num_classes is None and not w.pretrained:
        own = own_models()
        num_classes = own[name].num_classes if name in own else IMAGENET_CLASSES
    return create_model(name, num_classes, w)
