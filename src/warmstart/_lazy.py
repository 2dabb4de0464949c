"""One lazy-import helper for the package front doors (PEP 562): each public name is imported on first use.

``warmstart``, ``warmstart.data``, ``warmstart.init`` and ``warmstart.transfer`` list their names here instead
of importing them, so ``import warmstart`` and option parsing in the CLI need no torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_names(package: str, names: Mapping[str, str], aliases: Mapping[str, str] | None = None
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``names`` maps each public name to the module defining it
    (``aliases``: the name it has there, when different). A name, once imported, is cached in the package."""
    aliases = dict(aliases or {})

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), aliases.get(name, name))
        setattr(importlib.import_module(package), name, value)  # the next access is an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(names))

    return __getattr__, __dir__
