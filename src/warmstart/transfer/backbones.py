"""Build a classifier from an architecture name and :class:`~warmstart.transfer.weights.Weights`.

Every torchvision classification model works (``torchvision.models.list_models(module=torchvision.models)``),
and timm models as an optional extra (``timm:<name>``, ``pip install 'warmstart[timm]'``).

With pretrained tensors the model is built for ``num_classes`` by torchvision's own builder, so the new
classifier layer is initialised exactly as torchvision initialises it; every other tensor is checked against
the weights first (a file of another architecture fails with the first key that does not fit, never a
silent partial load), then loaded strictly. The pretrained classifier layer must have the shape of the
weights' ``num_classes``; it is kept when ``num_classes`` is ``None`` (ImageNet logits, zero-shot) and
replaced otherwise.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from warmstart.errors import UserError, unknown
from warmstart.transfer.weights import TIMM_PREFIX, Weights, check_arch, import_timm, resolve_weights

#: Auxiliary classifiers of GoogLeNet / Inception-v3. They only serve training-time deep supervision in the
#: original recipes; warmstart builds these models with ``aux_logits=False`` and skips their tensors.
AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def create_model(arch: str, num_classes: int | None, weights: Weights | None = None) -> nn.Module:
    """A classifier of ``arch`` for ``num_classes`` classes, initialised from ``weights``.

    ``weights=None`` means ``resolve_weights("none", arch)``. ``num_classes=None`` keeps the pretrained head
    (e.g. the 1000 ImageNet logits). Sets ``model.warmstart_pretrained`` (whether pretrained tensors were
    loaded) and ``model.warmstart_head`` (the name of the classification layer).
    """
    check_arch(arch)
    weights = weights if weights is not None else resolve_weights("none", arch)
    if weights.arch is not None and weights.arch != arch:
        raise UserError(f'weights {weights.where} are for "{weights.arch}", not for "{arch}"')
    if num_classes is None and not weights.pretrained:
        raise UserError(f"building {arch} without pretrained weights needs a number of classes")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise UserError(f"number of classes must be a positive integer, got {num_classes!r}")
    if arch.startswith(TIMM_PREFIX):
        return _create_timm(arch, num_classes, weights)

    state_dict = weights.load_state_dict() if weights.pretrained else {}
    orig = weights.num_classes
    n = num_classes if num_classes is not None else orig
    assert n is not None
    model = _build_torchvision(arch, n, weights)
    head = find_head(model)
    if weights.pretrained:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(AUX_PREFIXES.get(arch, ("\0",)))}
        keep_head = num_classes is None
        check_fits(state_dict, model, arch, weights.where, head=None if keep_head else head, orig_classes=orig)
        if not keep_head:
            state_dict = {k: v for k, v in state_dict.items() if not _under(k, head)}
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        left = [k for k in missing if not _under(k, head) and not k.endswith("num_batches_tracked")]
        assert not left and not unexpected, (left, unexpected)  # check_fits guarantees this
    model.warmstart_pretrained = weights.pretrained
    model.warmstart_head = head
    return model


def find_head(model: nn.Module) -> str:
    """Name of the classification layer: the last ``nn.Linear`` (the last ``nn.Conv2d`` when there is no
    Linear, as in SqueezeNet). ``model.warmstart_head`` wins when set; timm models answer
    ``get_classifier()``.
    """
    name = getattr(model, "warmstart_head", None)
    if isinstance(name, str):
        return name
    if hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        for n, m in model.named_modules():
            if m is clf and isinstance(m, (nn.Linear, nn.Conv2d)):
                return n
    last_linear = last_conv = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last_linear = n
        elif isinstance(m, nn.Conv2d):
            last_conv = n
    found = last_linear or last_conv
    if found is None:
        raise UserError(f"cannot find a classification layer (nn.Linear) in {type(model).__name__}")
    return found


def _under(key: str, module: str | None) -> bool:
    return module is not None and (key == module or key.startswith(module + "."))


def _build_torchvision(arch: str, num_classes: int, weights: Weights) -> nn.Module:
    import torchvision

    from warmstart.transfer.weights import own_models

    if arch in own_models():
        return own_models()[arch].build(num_classes)

    kwargs = dict(weights.meta.get("model_kwargs", {}))
    crop = weights.preprocess.crop
    if arch.startswith("vit_"):  # the position embedding fixes the input size
        kwargs.setdefault("image_size", crop)
    elif arch.startswith("maxvit"):
        kwargs.setdefault("input_size", (crop, crop))
    if arch in AUX_PREFIXES:
        kwargs["aux_logits"] = False
        kwargs.setdefault("init_weights", not weights.pretrained)
    try:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise UserError(f"cannot build {arch} with {kwargs} (from {weights.where} model_kwargs): {e}") from None


def check_fits(state_dict: Mapping[str, torch.Tensor], model: nn.Module, arch: str, where: str, *, head: str | None = None,
               orig_classes: int | None = None) -> None:
    """Raise a UserError naming the first tensor that does not fit, as strict loading would refuse it.

    With ``head`` given, the head's tensors are expected with ``orig_classes`` rows (they are then replaced).
    ``where`` names the weights in the message. Used by create_model and ``inspect``.
    """
    problems: list[str] = []
    for key, want in model.state_dict().items():
        shape = list(want.shape)
        if head is not None and _under(key, head) and shape:
            shape[0] = orig_classes
        if key not in state_dict:
            if not key.endswith("num_batches_tracked"):
                problems.append(f'"{key}" is missing from the weights')
        elif list(state_dict[key].shape) != shape:
            problems.append(f'"{key}" has shape {list(state_dict[key].shape)} in the weights vs {shape} in {arch}')
    own = model.state_dict()
    problems += [f'"{k}" in the weights is not a tensor of {arch}' for k in state_dict if k not in own]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(
            f"weights {where} do not fit {arch}: {problems[0]}{more}; are they for another architecture?"
        )


def _create_timm(arch: str, num_classes: int | None, weights: Weights) -> nn.Module:
    timm = import_timm()
    name = arch[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        raise UserError(str(unknown("timm model", name, timm.list_models())))
    orig = weights.num_classes
    n = num_classes if num_classes is not None else orig
    model = timm.create_model(name, pretrained=False, num_classes=orig if weights.pretrained else n)
    if weights.pretrained:
        state_dict = weights.load_state_dict()
        check_fits(state_dict, model, arch, weights.where, head=None, orig_classes=orig)
        model.load_state_dict(state_dict, strict=True)
        if num_classes is not None:
            model.reset_classifier(num_classes)  # timm's own head re-initialisation
    model.warmstart_pretrained = weights.pretrained
    model.warmstart_head = find_head(model)
    return model
