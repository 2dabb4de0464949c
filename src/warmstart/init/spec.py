"""Init specs: which scheme initializes which parameter, as Python or as one CLI string.

A spec is a list of rules ``target=scheme``, separated by commas::

    conv=he_normal,linear=xavier_uniform,bias=zeros
    he                                   # = conv=he_normal,linear=he_normal,bn=ones,bias=zeros
    features.0.*=zeros,fc2.weight=normal(0.01)

Targets are either a module type -- ``conv``, ``linear``, ``bn`` (batch/instance/group/layer/RMS
norm) for that type's weight, ``conv.bias``/``linear.bias``/``bn.bias`` for its bias, ``bias`` for
every bias -- or a glob over parameter names (or the names of the modules that hold them:
``fc2=zeros`` zeroes fc2's weight and bias). Glob rules win over type rules; among rules of one kind
the later wins. A bare scheme is shorthand for conv and linear weights with it, biases zero and norm
layers at their default (weight 1, bias 0); bare ``default`` resets conv, linear and norm layers with
their own ``reset_parameters()``. Scheme arguments go in parentheses: ``uniform(0.05)``,
``constant(0.1)``, ``he_normal(fan_out)``, ``he_uniform(fan_in, leaky_relu, 0.2)``, ``orthogonal(1.414)``.

Only parameters held directly by leaf modules are visited (containers' own parameters, e.g. a ViT's
class token, are left alone), and re-initializing a norm layer also resets its running statistics.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from warmstart.errors import UserError, did_you_mean, unknown
from warmstart.init.schemes import SCHEMES, Default, Scheme, Site, layer_types

if TYPE_CHECKING:  # parsing a spec needs no torch (the CLI checks --init before importing it); applying one does
    import torch
    from torch import nn

#: Type targets: name -> (module types, parameter role); ``bias`` covers every leaf's bias (:func:`type_targets`).
TYPE_TARGET_NAMES = (*(f"{key}{suffix}" for key in ("conv", "linear", "bn") for suffix in ("", ".weight", ".bias")), "bias")


@cache
def type_targets() -> dict[str, tuple[tuple[type, ...], str]]:
    """TYPE_TARGET_NAMES -> (module types, parameter role), built on first use (it needs torch's layer types)."""
    from torch import nn

    t = layer_types()
    return {**{f"{key}{suffix}": (types, role)
               for key, types in (("conv", t["CONV_TYPES"]), ("linear", t["LINEAR_TYPES"]), ("bn", t["NORM_TYPES"]))
               for suffix, role in (("", "weight"), (".weight", "weight"), (".bias", "bias"))},
            "bias": ((nn.Module,), "bias")}


def __getattr__(name: str) -> Any:  # PEP 562: TYPE_TARGETS as a module attribute, built on first use
    if name == "TYPE_TARGETS":
        return type_targets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Rule:
    """``target=scheme``: a type target (see TYPE_TARGETS) or a glob over parameter/module names."""

    target: str
    scheme: Scheme

    @property
    def is_type(self) -> bool:
        return self.target in TYPE_TARGET_NAMES

    def matches(self, site: Site) -> bool:
        if self.is_type:
            types, role = type_targets()[self.target]
            return isinstance(site.module, types) and site.role == role
        return fnmatchcase(site.name, self.target) or fnmatchcase(site.module_name, self.target)

    def __str__(self) -> str:
        return f"{self.target}={self.scheme.name}"


class InitSpec:
    """An ordered list of rules. ``InitSpec([("conv", he_normal), ("fc2.weight", "normal(0.01)")])``.

    Schemes may be given as :class:`Scheme`, as a factory without arguments (``zeros``) or as spec
    text. ``str(spec)`` is canonical spec text that parses back to an equal spec; ``a + b`` appends b's
    rules (so b wins where both match).
    """

    def __init__(self, rules: Iterable[Rule | tuple[str, Scheme | str | Callable[[], Scheme]]] = ()):
        self.rules: tuple[Rule, ...] = tuple(r if isinstance(r, Rule) else Rule(str(r[0]), _as_scheme(r[1])) for r in rules)

    def __add__(self, other: "InitSpec | str") -> "InitSpec":
        other = other if isinstance(other, InitSpec) else parse_init_spec(other)
        return InitSpec(self.rules + other.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InitSpec) and self.rules == other.rules

    def __str__(self) -> str:
        return ",".join(map(str, self.rules))

    def __repr__(self) -> str:
        return f"InitSpec({str(self)!r})"

    def resolve(self, model: nn.Module) -> list[tuple[Site, Scheme]]:
        """The scheme of every parameter some rule targets, in model order; checks every pairing."""
        sites = list(leaf_sites(model))
        for rule in self.rules:
            if not rule.is_type and not any(rule.matches(s) for s in sites):
                names = [s.name for s in sites] + [s.module_name for s in sites] + list(TYPE_TARGET_NAMES)
                raise UserError(f'init rule "{rule}" matches no parameter of {type(model).__name__}'
                                f"{did_you_mean(rule.target, names)}; parameters: {_listing([s.name for s in sites])}")
        plan = []
        for site in sites:
            globs = [r for r in self.rules if not r.is_type and r.matches(site)]
            hits = globs or [r for r in self.rules if r.is_type and r.matches(site)]
            if hits:
                hits[-1].scheme.check(site)
                plan.append((site, hits[-1].scheme))
        return plan


def _listing(names: Sequence[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def leaf_sites(model: nn.Module) -> Iterator[Site]:
    """Every parameter held by a leaf module (each tensor once), in ``named_modules`` order."""
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        for role, param in module.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                yield Site(f"{module_name}.{role}" if module_name else role, module_name, module, param)


# ---------------------------------------------------------------------------------------------- parsing

def split_outside_parens(text: str, sep: str = ",", where: str | None = None, what: str = "init spec") -> list[str]:
    """Split at ``sep`` outside parentheses: ``"he,normal(0.01,2)"`` -> ``["he", "normal(0.01,2)"]``."""
    where = text if where is None else where
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise UserError(f'{what}: unbalanced ")" in "{where}"')
        if ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise UserError(f'{what}: unclosed "(" in "{where}"')
    return parts + [text[start:]]


_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", re.S)


def _value(text: str) -> float | int | str:
    text = text.strip().strip("'\"")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_scheme(text: str, where: str | None = None) -> Scheme:
    """``he_normal(fan_out)`` -> Scheme. Errors name ``where`` (the rule) and suggest scheme names."""
    where = where or text
    m = _CALL.fullmatch(text)
    if not m:
        raise UserError(f'init spec: "{where}": expected a scheme like he_normal or uniform(0.05), got "{text.strip()}"')
    name, arg_text = m.group(1), m.group(2)
    if name not in SCHEMES:
        raise UserError(f'init spec: "{where}": {unknown("init scheme", name, SCHEMES)}')
    factory = SCHEMES[name]
    args, kwargs = [], {}
    for arg in split_outside_parens(arg_text, ",", where) if arg_text and arg_text.strip() else []:
        key, eq, value = arg.partition("=")
        if eq and key.strip().isidentifier():
            kwargs[key.strip()] = _value(value)
        elif not arg.strip():
            raise UserError(f'init spec: "{where}": empty argument in {name}(...)')
        else:
            args.append(_value(arg))
    params = inspect.signature(factory).parameters.values()
    try:
        inspect.signature(factory).bind(*args, **kwargs)
    except TypeError as e:
        usage = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default}" for p in params)
        raise UserError(f'init spec: "{where}": {name}({usage}): {e}') from None
    try:
        return factory(*args, **kwargs)
    except UserError as e:
        raise UserError(f'init spec: "{where}": {e}') from None


def _as_scheme(scheme: Scheme | str | Callable[[], Scheme]) -> Scheme:
    if isinstance(scheme, Scheme):
        return scheme
    if isinstance(scheme, str):
        return parse_scheme(scheme)
    if callable(scheme):
        return scheme()
    raise UserError(f"init spec: expected a Scheme, a scheme name or a factory, got {scheme!r}")


def _preset(scheme: Scheme) -> list[Rule]:
    """What a bare scheme means."""
    if isinstance(scheme, Default):
        return [Rule(f"{key}{suffix}", scheme) for key in ("conv", "linear", "bn") for suffix in ("", ".bias")]
    return [Rule("conv", scheme), Rule("linear", scheme), Rule("bn", SCHEMES["ones"]()), Rule("bias", SCHEMES["zeros"]())]


def parse_init_spec(text: str) -> InitSpec:
    """Parse spec text (see the module docstring). Bad text raises a UserError naming the bad part."""
    if not isinstance(text, str) or not text.strip():
        raise UserError('empty init spec; write e.g. "he" or "conv=he_normal,linear=xavier_uniform,bias=zeros"')
    rules: list[Rule] = []
    for part in split_outside_parens(text, ",", text):
        if not part.strip():
            raise UserError(f'init spec "{text}": empty rule (a stray comma?)')
        target, *rest = split_outside_parens(part, "=", part)
        if not rest:
            rules += _preset(parse_scheme(part))
            continue
        target, scheme_text = target.strip(), "=".join(rest)
        if not target or not scheme_text.strip() or re.search(r"[\s()=]", target):
            raise UserError(f'init spec: "{part.strip()}": expected target=scheme, e.g. conv=he_normal or fc2.weight=zeros')
        rules.append(Rule(target, parse_scheme(scheme_text, where=part.strip())))
    return InitSpec(rules)


#: The spec text that selects LSUV (case and surrounding spaces do not matter); LSUV itself needs data
#: (:mod:`warmstart.init.data_init`).
LSUV = "lsuv"


def is_lsuv(spec: InitSpec | str) -> bool:
    """True when ``spec`` asks for LSUV (the text ``lsuv``)."""
    return isinstance(spec, str) and spec.strip().lower() == LSUV


def check_init(spec: InitSpec | str) -> InitSpec | str:
    """Validate ``spec`` before any work: ``"lsuv"``, or a parsed :class:`InitSpec` (UserError if bad); no torch.

    LSUV rescales every layer in order, so it cannot be one rule among others (``linear=lsuv``).
    """
    if isinstance(spec, InitSpec):
        return spec
    if is_lsuv(spec):
        return LSUV
    if isinstance(spec, str) and LSUV in {part.split("=")[-1].strip().lower() for part in split_outside_parens(spec)}:
        raise UserError(f'init spec "{spec}": lsuv initialises the whole model from a batch of data and cannot be '
                        "combined with other rules; use it alone (--init lsuv)")
    return parse_init_spec(spec)


# ---------------------------------------------------------------------------------------------- applying

@dataclass(frozen=True)
class InitRow:
    """One initialized parameter: its scheme, fans M/N, the std targeted (eps) and the std drawn."""

    param: str
    type: str
    shape: tuple[int, ...]
    scheme: str
    fan_in: int | None
    fan_out: int | None
    eps: float | None
    std: float


class InitTable:
    """What :func:`apply_init` did, one row per parameter."""

    COLUMNS = ("param", "type", "shape", "scheme", "M", "N", "eps", "std")

    def __init__(self, rows: Sequence[InitRow]):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[InitRow]:
        return iter(self.rows)

    def __getitem__(self, param: str) -> InitRow:
        for row in self.rows:
            if row.param == param:
                return row
        raise KeyError(param)

    def to_dicts(self) -> list[dict]:
        return [{**row.__dict__, "shape": list(row.shape)} for row in self.rows]

    def to_text(self) -> str:
        def fmt(v) -> str:
            return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

        cells = [self.COLUMNS] + [
            (r.param, r.type, "x".join(map(str, r.shape)), r.scheme, fmt(r.fan_in), fmt(r.fan_out), fmt(r.eps), fmt(r.std))
            for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.COLUMNS))]
        numeric = {4, 5, 6, 7}
        return "\n".join("  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                         for row in cells)

    __str__ = to_text


def as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """``None``, a torch.Generator, or an int seed (-> a fresh Generator seeded with it)."""
    import torch

    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise UserError(f"apply_init: generator must be a torch.Generator or an int seed, got {generator!r}")


def _reset(module: nn.Module, generator: torch.Generator | None) -> None:
    """``module.reset_parameters()``, drawing from ``generator`` when one is given."""
    import torch

    if generator is None:
        module.reset_parameters()
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):  # the global RNG states are restored afterwards
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        module.reset_parameters()


def apply_init(model: nn.Module, spec: InitSpec | str, *, generator: torch.Generator | int | None = None) -> InitTable:
    """Initialize ``model`` in place by ``spec``; returns what was done.

    ``generator`` (a ``torch.Generator`` or an int seed) makes the result reproducible, on any device:
    values are drawn on the CPU and copied. Re-initializing a model marked
    ``warmstart_pretrained = True`` warns, as pretrained values are lost.
    """
    import torch
    from torch import nn

    spec = spec if isinstance(spec, InitSpec) else parse_init_spec(spec)
    generator = as_generator(generator)
    plan = spec.resolve(model)
    if plan and getattr(model, "warmstart_pretrained", False):
        warnings.warn(f"apply_init: re-initializing {len(plan)} parameters of a pretrained model "
                      f"({_listing([s.name for s, _ in plan], 3)}); their pretrained values are lost", stacklevel=2)
    by_module: dict[int, list[tuple[Site, Scheme]]] = {}
    for site, scheme in plan:
        by_module.setdefault(id(site.module), []).append((site, scheme))
    with torch.no_grad():
        for items in by_module.values():
            module = items[0][0].module
            if any(isinstance(scheme, Default) for _, scheme in items):
                keep = {role: p.detach().clone() for role, p in module.named_parameters(recurse=False)
                        if not any(s.role == role and isinstance(sc, Default) for s, sc in items)}
                _reset(module, generator)
                for role, value in keep.items():
                    getattr(module, role).copy_(value)
            for site, scheme in items:
                if not isinstance(scheme, Default):
                    staged = torch.empty(site.param.shape, dtype=torch.float32)
                    scheme.fill_(staged, site, generator)
                    site.param.copy_(staged)
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                module.reset_running_stats()
    return InitTable([
        InitRow(site.name, site.type, tuple(site.param.shape), scheme.name, *site.fans, scheme.target_std(site),
                float(site.param.detach().double().std(correction=0)))
        for site, scheme in plan])
