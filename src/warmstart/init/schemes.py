"""Initialization schemes: how one parameter tensor is filled, and the std it aims for.

The lecture's formulas, with M = fan-in and N = fan-out of a layer:

==================  ===============================  ==========================================
scheme              std it targets (``eps``)         note
==================  ===============================  ==========================================
``he``/``kaiming``  gain / sqrt(M)                   gain from the nonlinearity (relu: sqrt 2);
                                                     ``he_normal(fan_out)`` uses N instead of M
``xavier``          gain * sqrt(2 / (M + N))         alias ``glorot``; gain 1 by default
``lecun``           gain / sqrt(M)                   gain 1 by default
``normal(eps)``     eps                              N(0, eps^2)
``uniform(eps)``    eps / sqrt 3                     U[-eps, eps]
``orthogonal(g)``   g / sqrt(max(rows, cols))        ``torch.nn.init.orthogonal_``
==================  ===============================  ==========================================

Every ``*_uniform`` variant draws U[-b, b] with b = sqrt(3) * std, the uniform law with that std.
Bare ``he`` and ``lecun`` mean their normal variant and bare ``xavier`` its uniform one, as in the
papers. ``constant``/``zeros``/``ones``, ``dirac`` (convolutions: the identity),
``shared_kernel`` (the lecture's symmetric start) and ``default`` (the module's own
``reset_parameters()``) complete the set.

Fans are computed here, not by ``torch.nn.init``: its ``_calculate_fan_in_and_fan_out`` counts the
fan-out of a grouped convolution ``groups`` times too large (pytorch issue 23854). A convolution
with weight shape (out, in/g, kh, kw) has M = in/g * kh * kw and N = out/g * kh * kw; a depthwise
3x3 convolution therefore has M = N = 9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from functools import cache
from typing import TYPE_CHECKING, Any, Callable

from warmstart.errors import UserError, unknown

if TYPE_CHECKING:  # torch is imported where a scheme fills a tensor, so that parsing a spec needs no torch
    import torch
    from torch import Tensor, nn


@cache
def layer_types() -> dict[str, tuple[type, ...]]:
    """CONV_TYPES, LINEAR_TYPES and NORM_TYPES (every normalisation layer: BatchNorm, InstanceNorm, GroupNorm,
    LayerNorm, RMSNorm; the one list warmstart uses for init rules ``bn=``, signal statistics, layer grouping)."""
    from torch import nn

    return {"CONV_TYPES": (nn.modules.conv._ConvNd,), "LINEAR_TYPES": (nn.Linear,),
            "NORM_TYPES": (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)}


def __getattr__(name: str) -> Any:  # PEP 562: the torch layer types, built on first use
    if name in ("CONV_TYPES", "LINEAR_TYPES", "NORM_TYPES"):
        return layer_types()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Names ``torch.nn.init.calculate_gain`` knows.
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")


def fans(weight: Tensor, module: nn.Module | None = None) -> tuple[int, int]:
    """(M, N) = (fan-in, fan-out) of a weight of dim >= 2, right for grouped convolutions.

    Linear (out, in): M = in, N = out. Convolution (out, in/g, *k): M = in/g * prod(k),
    N = out/g * prod(k). Transposed convolutions keep PyTorch's reading of the dimensions.
    """
    if weight.dim() < 2:
        raise ValueError(f"fans need a weight of dim >= 2, got shape {tuple(weight.shape)}")
    receptive = math.prod(weight.shape[2:])
    groups = module.groups if isinstance(module, layer_types()["CONV_TYPES"]) else 1
    return weight.shape[1] * receptive, weight.shape[0] // groups * receptive


def gain(nonlinearity: str | float, param: float | None = None) -> float:
    """The gain for a nonlinearity (``torch.nn.init.calculate_gain``); a number is taken as the gain."""
    if isinstance(nonlinearity, (int, float)) and not isinstance(nonlinearity, bool):
        return float(nonlinearity)
    if nonlinearity not in NONLINEARITIES:
        raise unknown("nonlinearity", str(nonlinearity), NONLINEARITIES)
    from torch import nn

    return nn.init.calculate_gain(nonlinearity, param)


@dataclass
class Site:
    """One parameter about to be initialized, and the leaf module that holds it."""

    name: str  # full parameter name, e.g. "features.0.weight"
    module_name: str
    module: nn.Module
    param: nn.Parameter

    @property
    def role(self) -> str:
        """The parameter's own name in its module: "weight", "bias", ..."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def type(self) -> str:
        return type(self.module).__name__

    @cached_property
    def fans(self) -> tuple[int, int] | tuple[None, None]:
        return fans(self.param, self.module) if self.param.dim() >= 2 else (None, None)


@dataclass(frozen=True)
class Scheme:
    """An initialization scheme. ``name`` is its canonical spec text, e.g. ``he_normal(fan_out)``."""

    name: str

    def check(self, site: Site) -> None:
        """Raise a UserError when the scheme cannot fill this parameter."""

    def target_std(self, site: Site) -> float | None:
        """The std the scheme aims for on this parameter (None when it has none)."""
        return None

    def fill_(self, tensor: Tensor, site: Site, generator: torch.Generator | None) -> None:
        """Fill ``tensor`` (a CPU float tensor shaped like ``site.param``) in place."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


def _needs_fans(scheme: Scheme, site: Site) -> None:
    if site.param.dim() < 2:
        raise UserError(
            f"init scheme {scheme.name} needs a weight with a fan-in (dim >= 2), but {site.name} has "
            f"shape {tuple(site.param.shape)}; give it its own rule, e.g. {site.name}=zeros"
        )


@dataclass(frozen=True)
class Constant(Scheme):
    value: float = 0.0

    def target_std(self, site: Site) -> float:
        return 0.0

    def fill_(self, tensor, site, generator):
        from torch import nn

        nn.init.constant_(tensor, self.value)


@dataclass(frozen=True)
class Random(Scheme):
    """Zero-mean normal or uniform draws with std ``std_of(M, N)``."""

    dist: str = "normal"
    std_of: Callable[[int, int], float] = field(default=lambda m, n: 1.0, compare=False)
    uses_fans: bool = True

    def check(self, site):
        if self.uses_fans:
            _needs_fans(self, site)

    def target_std(self, site):
        return self.std_of(*site.fans)

    def fill_(self, tensor, site, generator):
        from torch import nn

        std = self.target_std(site)
        if self.dist == "normal":
            nn.init.normal_(tensor, 0.0, std, generator=generator)
        else:
            bound = math.sqrt(3.0) * std
            nn.init.uniform_(tensor, -bound, bound, generator=generator)


@dataclass(frozen=True)
class Orthogonal(Scheme):
    gain: float = 1.0

    def check(self, site):
        _needs_fans(self, site)

    def target_std(self, site):
        rows = site.param.shape[0]
        return self.gain / math.sqrt(max(rows, site.param.numel() // rows))

    def fill_(self, tensor, site, generator):
        from torch import nn

        nn.init.orthogonal_(tensor, self.gain, generator=generator)


@dataclass(frozen=True)
class Dirac(Scheme):
    """The identity convolution (``torch.nn.init.dirac_``), per group."""

    def check(self, site):
        if not isinstance(site.module, layer_types()["CONV_TYPES"]) or site.param.dim() not in (3, 4, 5):
            raise UserError(f"init scheme dirac is for convolution weights only; {site.name} is a {site.type} {site.role}")

    def fill_(self, tensor, site, generator):
        from torch import nn

        nn.init.dirac_(tensor, groups=site.module.groups)


@dataclass(frozen=True)
class SharedKernel(Scheme):
    """The lecture's symmetric start: one kernel, drawn once per layer, copied into every slot.

    Convolution (out, C, *k): a kernel of shape k is drawn from N(0, s^2) with s = sqrt(2/K) / C
    (K = prod(k)) and copied into all out x C slots. Once filters are symmetric every input channel
    carries the same signal, so a filter sums C equal responses; this s keeps the output scale of He.
    Linear (out, M): every weight is sqrt(2) / M, i.e. each unit starts as a scaled mean of its inputs
    (positive: a 1x1 "kernel" of random sign would silence a ReLU layer half the time).
    """

    def check(self, site):
        _needs_fans(self, site)

    def target_std(self, site):
        shape = site.param.shape
        return math.sqrt(2.0 / math.prod(shape[2:])) / shape[1] if len(shape) > 2 else 0.0

    def fill_(self, tensor, site, generator):
        import torch

        if tensor.dim() == 2:
            tensor.fill_(math.sqrt(2.0) / tensor.shape[1])
            return
        kernel = torch.randn(tensor.shape[2:], generator=generator) * self.target_std(site)
        tensor.copy_(kernel.expand_as(tensor))


@dataclass(frozen=True)
class Default(Scheme):
    """The module's own ``reset_parameters()`` (only on leaf modules that have it).

    ``apply_init`` calls it once per module; the std it targets is known for convolution, linear and
    norm layers (PyTorch's default U[-1/sqrt(M), 1/sqrt(M)] has std 1/sqrt(3M)).
    """

    def check(self, site):
        if not callable(getattr(site.module, "reset_parameters", None)):
            raise UserError(f"init scheme default: {site.module_name or 'the model'} ({site.type}) has no reset_parameters()")

    def target_std(self, site):
        m, t = site.module, layer_types()
        if isinstance(m, t["CONV_TYPES"] + t["LINEAR_TYPES"]):
            return 1.0 / math.sqrt(3.0 * fans(m.weight, m)[0])
        if isinstance(m, t["NORM_TYPES"]):
            return 0.0
        return None


def _number(scheme: str, arg: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{scheme}: {arg} must be a number, got {value!r}")
    if positive and value <= 0:
        raise UserError(f"{scheme}: {arg} must be > 0, got {value!r}")
    return float(value) + 0.0  # -0.0 -> 0.0: one value, one text


def _gain_arg(scheme: str, value: str | float) -> float:
    return gain(value) if isinstance(value, str) else _number(scheme, "gain", value, positive=True)


def _text(name: str, args: tuple, defaults: tuple) -> str:
    """Canonical text: trailing arguments equal to their defaults are left out."""
    args = list(args)
    while args and args[-1] == defaults[len(args) - 1]:
        args.pop()
    return f"{name}({', '.join(_float_text(a) if isinstance(a, float) else str(a) for a in args)})" if args else name


def _float_text(x: float) -> str:
    """Short (``0.01``, ``2``) where that is exact, else every digit: the text must parse back to ``x``."""
    short = format(x, "g")
    return short if float(short) == x else repr(x)


def constant(value: float) -> Scheme:
    """Every entry equals ``value``."""
    value = _number("constant", "value", value)
    return Constant(_text("constant", (value,), (None,)), value)


def zeros() -> Scheme:
    return Constant("zeros", 0.0)


def ones() -> Scheme:
    return Constant("ones", 1.0)


def uniform(eps: float) -> Scheme:
    """U[-eps, eps] (std eps / sqrt 3)."""
    eps = _number("uniform", "eps", eps, positive=True)
    return Random(_text("uniform", (eps,), (None,)), "uniform", lambda m, n: eps / math.sqrt(3.0), uses_fans=False)


def normal(eps: float) -> Scheme:
    """N(0, eps^2)."""
    eps = _number("normal", "eps", eps, positive=True)
    return Random(_text("normal", (eps,), (None,)), "normal", lambda m, n: eps, uses_fans=False)


def _he(dist: str, mode: str, nonlinearity: str, a: float) -> Scheme:
    name = f"he_{dist}"
    if mode not in ("fan_in", "fan_out"):
        raise unknown(f"{name} mode", str(mode), ("fan_in", "fan_out"))
    a = _number(name, "a", a)
    if a and nonlinearity != "leaky_relu":
        raise UserError(f"{name}: a is the leaky_relu slope; write e.g. {name}({mode}, leaky_relu, {a:g})")
    g = gain(nonlinearity, a if nonlinearity == "leaky_relu" else None)
    fan = 0 if mode == "fan_in" else 1
    return Random(_text(name, (mode, nonlinearity, a), ("fan_in", "relu", 0.0)), dist, lambda m, n: g / math.sqrt((m, n)[fan]))


def he_normal(mode: str = "fan_in", nonlinearity: str = "relu", a: float = 0.0) -> Scheme:
    """He/Kaiming normal: std = gain / sqrt(fan), fan = M (``fan_in``) or N (``fan_out``)."""
    return _he("normal", mode, nonlinearity, a)


def he_uniform(mode: str = "fan_in", nonlinearity: str = "relu", a: float = 0.0) -> Scheme:
    """He/Kaiming uniform: U[-b, b], b = sqrt(3) * gain / sqrt(fan)."""
    return _he("uniform", mode, nonlinearity, a)


def xavier_normal(gain: str | float = 1.0) -> Scheme:
    """Xavier/Glorot normal: std = gain * sqrt(2 / (M + N)); gain may be a nonlinearity name."""
    g = _gain_arg("xavier_normal", gain)
    return Random(_text("xavier_normal", (gain,), (1.0,)), "normal", lambda m, n: g * math.sqrt(2.0 / (m + n)))


def xavier_uniform(gain: str | float = 1.0) -> Scheme:
    """Xavier/Glorot uniform: U[-b, b], b = gain * sqrt(6 / (M + N))."""
    g = _gain_arg("xavier_uniform", gain)
    return Random(_text("xavier_uniform", (gain,), (1.0,)), "uniform", lambda m, n: g * math.sqrt(2.0 / (m + n)))


def lecun_normal(gain: str | float = 1.0) -> Scheme:
    """LeCun normal: std = gain / sqrt(M)."""
    g = _gain_arg("lecun_normal", gain)
    return Random(_text("lecun_normal", (gain,), (1.0,)), "normal", lambda m, n: g / math.sqrt(m))


def lecun_uniform(gain: str | float = 1.0) -> Scheme:
    """LeCun uniform: U[-b, b], b = sqrt(3) * gain / sqrt(M)."""
    g = _gain_arg("lecun_uniform", gain)
    return Random(_text("lecun_uniform", (gain,), (1.0,)), "uniform", lambda m, n: g / math.sqrt(m))


def orthogonal(gain: str | float = 1.0) -> Scheme:
    """A (semi-)orthogonal matrix times ``gain`` (``torch.nn.init.orthogonal_``)."""
    return Orthogonal(_text("orthogonal", (gain,), (1.0,)), _gain_arg("orthogonal", gain))


def dirac() -> Scheme:
    return Dirac("dirac")


def shared_kernel() -> Scheme:
    return SharedKernel("shared_kernel")


def default() -> Scheme:
    return Default("default")


#: Every scheme name a spec may use, with its factory; aliases share a factory and a canonical name.
SCHEMES: dict[str, Callable[..., Scheme]] = {
    "constant": constant, "zeros": zeros, "ones": ones, "uniform": uniform, "normal": normal,
    "he": he_normal, "he_normal": he_normal, "he_uniform": he_uniform,
    "kaiming": he_normal, "kaiming_normal": he_normal, "kaiming_uniform": he_uniform,
    "xavier": xavier_uniform, "xavier_normal": xavier_normal, "xavier_uniform": xavier_uniform,
    "glorot": xavier_uniform, "glorot_normal": xavier_normal, "glorot_uniform": xavier_uniform,
    "lecun": lecun_normal, "lecun_normal": lecun_normal, "lecun_uniform": lecun_uniform,
    "orthogonal": orthogonal, "dirac": dirac, "shared_kernel": shared_kernel, "default": default,
}
