"""The written reading of a comparison: the ranking, then every gap measured against the noise it can be told from.

Three measures of noise, all from the summary alone (so ``warmstart report`` rewrites the same words): one
validation image (the resolution of an accuracy), the seed-to-seed spread (with several seeds: 2 x the standard
error of the gap) and, seed by seed on the same validation images, the exact McNemar test of the images on
which two arms disagree (``summary["paired"]``). A lead the images cannot separate is not called a win.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from warmstart.report.stats import gap_se
from warmstart.report.text import epochs, pm, seconds

SIGNIFICANCE = 0.05       # a paired (McNemar) p-value under this, in every seed, calls a gap real
SMALL_GAP_IMAGES = 3      # with one seed, a lead of at most this many validation images is called possibly luck


def one_image_pp(n_val: int) -> float:
    """One of ``n_val`` validation images in percentage points of accuracy: the resolution of an accuracy."""
    return 100.0 / max(1, n_val)


@dataclass
class Measures:
    """What the reading measures each strategy by: final accuracy and its seed-to-seed std (pp), mean train time (s);
    and the noise's units: the fewest seeds any strategy ran, the validation images and one of them in pp."""

    acc: dict[str, float]
    sd: dict[str, float]
    t: dict[str, float]
    n_seeds: int
    n_val: int
    one: float

    @classmethod
    def of(cls, summary: dict[str, Any]) -> "Measures":
        per, rank, n_val = summary["strategies"], summary["ranking"], summary["val_images"]
        return cls(acc={k: 100 * per[k]["final_val_accuracy"]["mean"] for k in rank},
                   sd={k: 100 * per[k]["final_val_accuracy"]["std"] for k in rank},
                   t={k: per[k]["train_seconds"]["mean"] for k in rank},
                   n_seeds=min(p["seeds"] for p in per.values()), n_val=n_val, one=one_image_pp(n_val))


def reading(summary: dict[str, Any]) -> list[str]:
    """The automatic interpretation: the ranking, then each strategy against the best, measured against the noise."""
    rank, m = summary["ranking"], Measures.of(summary)
    best = rank[0]
    b = summary["strategies"][best]
    out = [ranking_text(summary, m)]
    out += [gap_text(summary, m, best, k) for k in rank[1:]]
    if m.n_seeds > 1:
        worst = max(rank, key=lambda k: m.sd[k])
        out.append(f"Seed-to-seed spread (std): up to {m.sd[worst]:.1f} pp ({worst}); one validation image is {m.one:.2f} pp.")
    else:
        out.append(f"One seed per strategy: a gap of a few images may be luck; `--seeds 3` measures the seed-to-seed noise "
                   f"(one validation image is {m.one:.2f} pp here).")
    out += chance_texts(summary, m)
    peak = 100 * b["best_val_accuracy"]["mean"]
    if peak - m.acc[best] >= m.one:
        out.append(f"**{best}** peaked at {peak:.1f} % (epoch {epochs(b['best_epochs'])}) and ended at {m.acc[best]:.1f} %: "
                   "the peak is chosen on the validation images themselves, so it is the optimistic number.")
    out[1:1] = grid_reading(summary)  # with several starts: which start, strategy by strategy, right after the ranking
    return out


def ranking_text(summary: dict[str, Any], m: Measures) -> str:
    """The strategies in order of final accuracy (``=`` where they tie to 0.1 pp); with one strategy, its result."""
    rank, acc = summary["ranking"], m.acc
    if len(rank) > 1:
        return ("Ranking by final validation accuracy" + (f" (mean of {m.n_seeds} seeds)" if m.n_seeds > 1 else "") + ": "
                + "".join(("" if i == 0 else " = " if f"{acc[k]:.1f}" == f"{acc[rank[i - 1]]:.1f}" else " > ")
                          + f"**{k}** {acc[k]:.1f} %" for i, k in enumerate(rank)) + ".")
    b = summary["strategies"][rank[0]]
    return (f"**{rank[0]}** reaches {pm(b['final_val_accuracy']['mean'], b['final_val_accuracy']['std'], b['seeds'])} final "
            f"validation accuracy in {seconds(m.t[rank[0]])} of training.")


def gap_text(summary: dict[str, Any], m: Measures, best: str, k: str) -> str:
    """``best`` against ``k``: the gap in pp and in validation images, at what cost in time, and whether the noise (one
    image, 2 x the seed-to-seed standard error, the paired test) lets it be called a win."""
    per, acc, sd, t, one, n_val = summary["strategies"], m.acc, m.sd, m.t, m.one, m.n_val
    d = acc[best] - acc[k]
    images = round(d / one)
    se = gap_se(sd[best], per[best]["seeds"], sd[k], per[k]["seeds"]) if m.n_seeds > 1 else None
    noise = max(one, 2 * se) if se is not None else one
    ratio = t[best] / t[k] if t[k] > 0 else math.inf
    cost = (f"at {ratio:.1f} × the training time ({seconds(t[best])} vs {seconds(t[k])})" if ratio >= 1.05 else
            f"in {ratio:.2f} × the training time ({seconds(t[best])} vs {seconds(t[k])})" if ratio <= 0.95 else
            f"in about the same time ({seconds(t[best])} vs {seconds(t[k])})")
    # a mean over seeds can sit between whole images: 0.5 of 50, not "0 of 50"
    count = f"{images}" if abs(d / one - images) < 0.05 else f"{d / one:.1f}"
    gap = f"{d:.1f} pp ({count} of {n_val} validation images)"
    pairs = (summary.get("paired") or {}).get(k)
    test = paired_text(best, k, pairs, n_val) if pairs else None
    tail = f"; {test}." if test else "."
    separated = pairs is None or max(r["p"] for r in pairs) < SIGNIFICANCE
    # every seed, on the same images, a significant win for the best: real even when the seeds spread widely
    every_seed = bool(pairs) and images >= 1 and all(r["p"] < SIGNIFICANCE and r["best_only"] > r["other_only"]
                                                     for r in pairs)
    clear = d > noise and images >= 1 and (se is not None or images > SMALL_GAP_IMAGES)
    if (clear and separated) or every_seed:
        return f"**{best}** beat **{k}** by {gap} {cost}; {win_reason(best, d, noise, se, one)}{tail}"
    if clear and not separated:
        return (f"**{best}** leads **{k}** by {gap} {cost}, but the validation images cannot separate them: "
                f"{test}. More validation images would tell.")
    if d > noise and images >= 1:
        return (f"**{best}** leads **{k}** by only {gap} {cost}: with one seed, a gap of {images} "
                f"image{'s' if images != 1 else ''} may be luck (`--seeds 3` tells){tail}")
    why = (f"within noise (2 × the standard error over seeds: {2 * se:.1f} pp; one image: {one:.2f} pp)" if se is not None
           else f"within noise ({images} image{'s' if images != 1 else ''} of {n_val}; one seed, so the seed-to-seed "
                "noise is not measured)")
    some_seed = bool(pairs) and any(r["p"] < SIGNIFICANCE for r in pairs)
    cheaper = f"; **{k}** gets there {ratio:.1f} × faster, the better buy" if ratio > 1.5 and not some_seed else ""
    return f"**{best}** and **{k}** differ by {gap}: {why}{cheaper}{tail}"


def win_reason(best: str, d: float, noise: float, se: float | None, one: float) -> str:
    """Why a gap of ``d`` pp counts as a win: the noise it beats (``se``: the gap's standard error over seeds)."""
    if se is None:
        return f"one image is {one:.2f} pp; with one seed the seed-to-seed noise is not measured"
    if d > noise:
        return f"larger than the noise: 2 × the standard error over seeds is {2 * se:.1f} pp, one image {one:.2f} pp"
    return (f"the seeds spread widely (2 × the standard error over seeds: {2 * se:.1f} pp), yet **{best}** wins in "
            "every one of them")


def chance_texts(summary: dict[str, Any], m: Measures) -> list[str]:
    """A sentence for each strategy that stayed within one image of chance level, with the likely reason."""
    per, k_classes, out = summary["strategies"], len(summary.get("classes") or []), []
    if k_classes < 2:
        return out
    chance = 100.0 / k_classes
    for k in (k for k in summary["ranking"] if m.acc[k] <= chance + m.one):
        text = f"**{k}** stays at chance level (1 in {k_classes} = {chance:.0f} %)"
        loss, train_acc = per[k].get("final_train_loss"), per[k].get("final_train_accuracy")
        if loss is not None and loss >= 0.9 * math.log(k_classes):
            text += (f": even its training loss ended at {loss:.2f}, chance's ln {k_classes} = {math.log(k_classes):.2f}, so it "
                     "did not learn the training images either. A learning rate too high for training from scratch (or too "
                     "few epochs) does this: try a lower `--lr`.")
        elif train_acc is not None and 100 * train_acc >= chance + 30:
            text += (f": it fits the training images ({100 * train_acc:.0f} % train accuracy) but nothing of it carries over "
                     "to new images: too little data to learn features from.")
        else:
            text += f": it learned nothing usable in {summary.get('epochs', 'these')} epochs."
        out.append(text)
    return out


def grid_reading(summary: dict[str, Any]) -> list[str]:
    """With several starts (``summary["grid"]``): for each strategy, its starts ranked, and the best start against
    each other one on the same validation images -- a start is called better only when it wins the paired test
    in every seed."""
    g = summary.get("grid")
    if not g:
        return []
    n_val, out = summary["val_images"], []
    for col in g["columns"]:
        b = g["best_start"].get(col)
        if b is None:
            continue
        others = sorted((r for r in g["rows"] if r != b and col in g["cells"].get(r, {}) and r != "none"),
                        key=lambda r: -g["cells"][r][col]["final_val_accuracy"]["mean"])
        acc = {r: 100 * g["cells"][r][col]["final_val_accuracy"]["mean"] for r in [b, *others]}
        parts = []
        for r in others:
            pairs = (g.get("paired") or {}).get(col, {}).get(r)
            if not pairs:
                parts.append(f"**{b}** and **{r}**: no paired test (the arms saved no predictions)")
                continue
            test = paired_text(b, r, pairs, n_val)
            won = all(p["p"] < SIGNIFICANCE and p["best_only"] > p["other_only"] for p in pairs)
            every = " in every seed" if len(pairs) > 1 else ""
            parts.append(f"**{b}** is the better start, it wins the paired test{every}: {test}" if won else
                         f"the validation images cannot tell **{b}** from **{r}**: {test}")
        out.append(f"Starts for **{col}**: " + " > ".join(f"**{r}** {acc[r]:.1f} %" for r in [b, *others]) + "; "
                   + "; ".join(parts) + ".")
    return out


def paired_text(best: str, k: str, pairs: list[dict[str, Any]], n_val: int) -> str:
    """'paired image by image (seed 0), finetune-all alone is right on 3 of the 153 and transfer alone on 1 (exact
    McNemar test, p = 0.62)'."""
    def each(key: str) -> str:
        return ", ".join(str(r[key]) for r in pairs)

    def p_text(p: float) -> str:
        return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"

    ps = sorted(r["p"] for r in pairs)
    ptext = p_text(ps[0]) if len(ps) == 1 or p_text(ps[0]) == p_text(ps[-1]) else f"{p_text(ps[0])} to {ps[-1]:.2g}"
    seeds = f" (seed{'s' if len(pairs) > 1 else ''} {', '.join(str(r['seed']) for r in pairs)})"
    return (f"paired image by image{seeds}, {best} alone is right on {each('best_only')} of the {n_val} and {k} alone on "
            f"{each('other_only')} (exact McNemar test, {ptext})")
