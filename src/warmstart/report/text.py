"""Numbers as the reports write them: percentages, mean ± std, durations, significant digits, shares."""

from __future__ import annotations

import math
from typing import Sequence


def pct(x: float, digits: int = 1) -> str:
    """0.9346 -> '93.5 %'."""
    return f"{100 * x:.{digits}f} %"


def pm(mean: float, std: float, n: int, *, scale: float = 100.0, unit: str = " %", digits: int = 1) -> str:
    """'93.5 ± 1.2 %' (several values) or '93.5 %' (one)."""
    if n > 1:
        return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}{unit}"
    return f"{scale * mean:.{digits}f}{unit}"


def seconds(s: float) -> str:
    """A duration the way people read it: '0.8 s', '42 s', '3 min 05 s', '1 h 02 min'."""
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def sig(x: float) -> str:
    """Two significant digits, no exponent: 33.6 -> '34', 4.93 -> '4.9', 0.0312 -> '0.031'."""
    if x == 0:
        return "0"
    digits = max(0, 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{digits}f}"


def share(part: int, total: int) -> str:
    """325 of 159,109 -> '0.2 %'; 1 of 10**6 -> '< 0.1 %'."""
    if not total:
        return ""
    x = 100 * part / total
    return f"{x:.0f} %" if x >= 10 or x == 0 else f"{x:.1f} %" if x >= 0.1 else "< 0.1 %"


def epochs(es: Sequence[int]) -> str:
    """[3, 3] -> '3'; [2, 3] -> '2, 3'."""
    return str(es[0]) if len(set(es)) == 1 else ", ".join(map(str, es))
