"""Sizes in bytes, for people: one way to print them (:func:`human_size`) and one way to read them (:func:`parse_size`),
used wherever warmstart prints or takes a size (the cache folder, a full disk, an exported model)."""

from __future__ import annotations

import re

from warmstart.errors import UserError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: float) -> str:
    """``1000`` -> ``'1000 B'``, ``48234496`` -> ``'46.0 MiB'``: bytes in units a person reads (powers of 1024)."""
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


_SIZE = re.compile(r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[kmgtp]?)(?P<i>i?)(?P<b>b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int | float, what: str = "size") -> int | None:
    """``'20G'``, ``'500M'``, ``'1.5GiB'``, ``'123'`` (bytes) -> bytes; ``'none'``/``'off'`` -> None (no cap).

    K/M/G/T/P and KiB/MiB/... are powers of 1024 (as :func:`human_size` prints them); KB/MB/GB/... with a bare
    ``B`` are powers of 1000, as written.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise UserError(f"{what} {text}: a size cannot be negative; give e.g. 20G or 500M")
        return int(text)
    s = str(text).strip()
    if s.lower() in ("none", "off", "unlimited"):
        return None
    m = _SIZE.match(s)
    if not m:
        raise UserError(f"{what} {text!r} is not a size; give e.g. 20G, 500M, 1.5GiB or 'none' for no cap")
    unit = m["unit"].lower()
    power = "bkmgtp".index(unit) if unit else 0
    base = 1000 if (m["b"] and not m["i"] and unit) else 1024
    return int(float(m["num"]) * base ** power)
