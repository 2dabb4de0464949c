"""The options of ``warmstart compare`` that are parsed before anything heavy: ``--strategies``, ``--seeds``, ``--weights``.

No torch here: the CLI (``api.compare_options``) checks them first, so a typo answers at once.
"""

from __future__ import annotations

import os
from typing import Sequence

from warmstart.errors import UserError
from warmstart.transfer.spec import Arm, parse_arm

DEFAULT_STRATEGIES = ("scratch", "transfer", "finetune-all")
MAX_SEEDS = 100


def parse_strategies(spec: str | Sequence[str]) -> list[Arm]:
    """'scratch,transfer,finetune-all' (or a list of specs) -> distinct arms, in the given order.

    An arm may carry modifiers (``finetune-all+l2sp:0.1,0.01``, ``finetune-all+interpolate``: :func:`parse_arm`): a
    comma followed by a number continues the previous arm's ``l2sp:ALPHA,BETA`` (no strategy name starts with a digit).
    """
    items = _join_numbers(spec.split(",")) if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    if not items:
        raise UserError("--strategies is empty; give a comma-separated list, e.g. scratch,transfer,finetune-all")
    out: list[Arm] = []
    for text in items:
        s = parse_arm(text)
        if s in out:
            raise UserError(f"--strategies names {s.spec} twice; each strategy runs once per seed")
        out.append(s)
    return out


def _join_numbers(parts: list[str]) -> list[str]:
    out: list[str] = []
    for p in (p.strip() for p in parts):
        if out and p[:1].isdigit() or out and p[:1] == ".":
            out[-1] += "," + p
        else:
            out.append(p)
    return out


def parse_seeds(seeds: int | str | Sequence[int], first: int = 0) -> list[int]:
    """``3`` -> three seeds from ``first`` (first, first+1, first+2); ``'0,5,9'`` or a list -> those seeds."""
    if isinstance(seeds, str):
        text = seeds.strip()
        if "," not in text:
            try:
                seeds = int(text)
            except ValueError:
                raise UserError(f"--seeds must be a count (e.g. 3) or a comma-separated list of seeds (e.g. 0,1,2), got {text!r}") from None
        else:
            try:
                seeds = [int(p) for p in text.split(",") if p.strip()]
            except ValueError:
                raise UserError(f"--seeds {text!r}: every seed must be a whole number, e.g. 0,1,2") from None
    if isinstance(seeds, bool):
        raise UserError(f"--seeds must be a count or a list of seeds, got {seeds!r}")
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise UserError(f"--seeds must be between 1 and {MAX_SEEDS} (the number of seeds per strategy), got {seeds}")
        return [first + i for i in range(seeds)]
    out = [int(s) for s in seeds]
    if not out:
        raise UserError("--seeds is empty; give a count (e.g. 3) or seeds (e.g. 0,1,2)")
    if len(set(out)) != len(out):
        raise UserError(f"--seeds lists a seed twice ({', '.join(map(str, out))}); each seed runs once per strategy")
    if len(out) > MAX_SEEDS:
        raise UserError(f"--seeds: at most {MAX_SEEDS} seeds, got {len(out)}")
    return out


def parse_weights(weights: str | Sequence[str]) -> list[str]:
    """``'a.pth,b.pth'`` (or a list) -> ``['a.pth', 'b.pth']``; a single existing path that contains commas stays whole."""
    if isinstance(weights, str):
        text = weights.strip()
        items = [text] if os.path.exists(text) or "," not in text else [w.strip() for w in text.split(",")]
    else:
        items = [str(w).strip() for w in weights]
    items = [w for w in items if w]
    if not items:
        raise UserError("--weights is empty; give imagenet, none, a weights file, or several of them separated by commas")
    return items
