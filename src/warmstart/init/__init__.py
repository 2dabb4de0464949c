"""Weight initialization: schemes, specs that say which parameter gets which, and the symmetry report."""

from __future__ import annotations

from warmstart._lazy import lazy_names

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
__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
