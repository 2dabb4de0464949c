"""Weight initialization: schemes, specs that say which parameter gets which, and the symmetry report."""

from warmstart.init.schemes import SCHEMES, Scheme, fans, gain
from warmstart.init.spec import InitRow, InitSpec, InitTable, Rule, apply_init, parse_init_spec, parse_scheme
from warmstart.init.symmetry import LayerSymmetry, SymmetryReport, explain_layer, symmetry_report

__all__ = [
    "SCHEMES", "Scheme", "fans", "gain",
    "InitRow", "InitSpec", "InitTable", "Rule", "apply_init", "parse_init_spec", "parse_scheme",
    "LayerSymmetry", "SymmetryReport", "explain_layer", "symmetry_report",
]
