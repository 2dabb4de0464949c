"""Weight initialization: schemes, specs that say which parameter gets which, and the symmetry report."""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it (imported lazily)
_LAZY = {
    "SCHEMES": "warmstart.init.schemes",
    "Scheme": "warmstart.init.schemes",
    "fans": "warmstart.init.schemes",
    "gain": "warmstart.init.schemes",
    "InitRow": "warmstart.init.spec",
    "InitSpec": "warmstart.init.spec",
    "InitTable": "warmstart.init.spec",
    "Rule": "warmstart.init.spec",
    "apply_init": "warmstart.init.spec",
    "parse_init_spec": "warmstart.init.spec",
    "parse_scheme": "warmstart.init.spec",
    "LayerSymmetry": "warmstart.init.symmetry",
    "SymmetryReport": "warmstart.init.symmetry",
    "explain_layer": "warmstart.init.symmetry",
    "symmetry_report": "warmstart.init.symmetry",
}
_ALIAS = {}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:  # PEP 562: each name imported on first use, so parsing options needs no torch
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _ALIAS.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
