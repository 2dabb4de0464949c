"""Self-contained HTML reports: one file, images embedded as data URIs, no scripts, opens with no network.

An experiment contributes :class:`Section` objects; :func:`write_report` renders them into ``report.html``
and ``report.md`` beside each other. Inside a section the order is fixed, most important first:

1. ``highlights``: a few big numbers (label, value), e.g. the winner and its accuracy;
2. ``reading``: the automatic interpretation, in a highlighted box (a paragraph that starts with
   ``Reading:`` gets the same box);
3. ``paragraphs`` (the setup), ``tables`` (numbered, caption on top; columns of numbers right-aligned in
   tabular figures, text left-aligned; ``highlight``-ed rows in bold), ``figures`` (numbered, captioned; ``wide`` ones take the full
   text width, the others sit side by side), and the command that made it.

``level=3`` makes a section a subsection of the one before (smaller heading, not in the navigation).
Text may use ``code`` and **bold**; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from warmstart.engine import io
from warmstart.engine.layout import REPORT_HTML, REPORT_MD


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    cls: str = ""
    highlight: Sequence[int] = ()   # indices of rows shown in bold (e.g. the winner)

    def numeric(self) -> list[bool]:
        """Per column: whether every non-empty cell reads as a number (right-aligned; text is left-aligned)."""
        return [bool(self.rows) and all(_looks_numeric(_cell(r[i])) for r in self.rows if i < len(r) and _cell(r[i]).strip())
                for i in range(len(self.columns))]


@dataclass
class Figure:
    path: Path
    caption: str = ""
    wide: bool = False              # full text width instead of side by side


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    command: str = ""          # the command that produced it, shown verbatim
    anchor: str = ""
    reading: list[str] = field(default_factory=list)              # key findings, shown first
    highlights: list[tuple[str, str]] = field(default_factory=list)  # (label, value) big numbers
    level: int = 2             # 2: section (in the navigation), 3: subsection


CSS = """
:root{--ink:#1d232a;--mute:#5d6b79;--line:#e3e7ec;--soft:#f5f7f9;--accent:#2f6fb0;--good:#3c8d40}
*{box-sizing:border-box}
body{font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;max-width:1120px;margin:0 auto;
 padding:1.5em 1.2em 4em;color:var(--ink);background:#fff}
h1{font-size:1.75em;margin:.2em 0 .1em;letter-spacing:-.01em} h2{font-size:1.35em;border-bottom:2px solid var(--line);padding-bottom:.25em;margin:2.2em 0 .6em}
h3{font-size:1.08em;margin:1.8em 0 .5em;color:#2b3540}
.meta{color:var(--mute);font-size:.88em;margin:.2em 0}
nav{margin:.8em 0 0;padding:.5em 0;border-top:1px solid var(--line);border-bottom:1px solid var(--line);font-size:.92em}
nav a{margin-right:1.2em;color:var(--accent);text-decoration:none} nav a:hover{text-decoration:underline}
code,pre{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);border-radius:4px}
code{padding:.1em .3em} pre{padding:.6em .8em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:.9em 0}
.card{border:1px solid var(--line);border-radius:8px;padding:.55em 1em;min-width:9.5em;background:var(--soft)}
.card .v{font-size:1.45em;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.25}
.card .k{color:var(--mute);font-size:.8em;text-transform:uppercase;letter-spacing:.04em}
.reading{background:#eef6ee;border-left:4px solid var(--good);padding:.55em 1em;margin:.9em 0;border-radius:0 6px 6px 0}
.reading ul{margin:.2em 0;padding-left:1.2em} .reading li{margin:.25em 0}
.tablewrap{overflow-x:auto;margin:1em 0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.93em}
caption{caption-side:top;text-align:left;color:var(--mute);font-size:.86em;padding-bottom:.35em;max-width:900px}
th,td{border-bottom:1px solid var(--line);padding:.35em .8em;text-align:right;white-space:nowrap}
th{background:var(--soft);font-weight:600;border-bottom:2px solid #cfd6dd;white-space:normal;vertical-align:bottom}
td.txt,th.txt{text-align:left} td.num,th.num{text-align:right} tr.hl td{font-weight:650;background:#f1f7f1}
.figs{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
figure{margin:.8em 0;max-width:100%} figure.wide{flex-basis:100%} figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;display:block}
figcaption{color:var(--mute);font-size:.86em;max-width:720px;margin-top:.3em} .n{font-weight:600;color:var(--ink)}
.cmd{margin-top:1em} .cmd summary{color:var(--mute);font-size:.88em;cursor:pointer}
"""


def data_uri(path: Path) -> str:
    """A PNG or SVG file as a data: URI, so the page (or the notebook) keeps it when the files move."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    mime = "image/svg+xml" if str(path).endswith(".svg") else "image/png"
    return f"data:{mime};base64,{data}"


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 1e4 else str(v)
    return str(v)


_NUMBER = re.compile(r"^[<>~≈]?\s*[-+−]?[\d.,]+(\s|%|$)")


def _looks_numeric(text: str) -> bool:
    return bool(_NUMBER.match(text.strip()))


def inline(text: str) -> str:
    """Escape ``text`` for HTML, then render ``code`` and **bold**."""
    s = html.escape(str(text))
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<meta name='viewport' content='width=device-width,initial-scale=1'>", f"<style>{CSS}</style></head><body>",
           f"<header><h1>{html.escape(title)}</h1>",
           f"<p class='meta'>{inline(subtitle) if subtitle else ''}{' · ' if subtitle else ''}{time.strftime('%Y-%m-%d %H:%M')}</p>"]
    top = [(i, s) for i, s in enumerate(sections) if s.level <= 2]
    if len(top) > 1:
        out.append("<nav>" + "".join(f"<a href='#{_anchor(s, i)}'>{html.escape(s.title)}</a>" for i, s in top) + "</nav>")
    out.append("</header><main>")
    n_fig = n_tab = 0
    for i, s in enumerate(sections):
        h = "h3" if s.level >= 3 else "h2"
        out.append(f"<section id='{_anchor(s, i)}'><{h}>{html.escape(s.title)}</{h}>")
        if s.highlights:
            out.append("<div class='cards'>" + "".join(
                f"<div class='card'><div class='k'>{html.escape(k)}</div><div class='v'>{inline(v)}</div></div>"
                for k, v in s.highlights) + "</div>")
        if s.reading:
            out.append("<div class='reading'><ul>" + "".join(f"<li>{inline(r)}</li>" for r in s.reading) + "</ul></div>")
        for p in s.paragraphs:
            if p.startswith("Reading:"):
                out.append(f"<div class='reading'><p>{inline(p)}</p></div>")
            else:
                out.append(f"<p>{inline(p)}</p>")
        for t in s.tables:
            n_tab += 1
            cap = f"<caption><span class='n'>Table {n_tab}.</span> {inline(t.caption)}</caption>" if t.caption else ""
            out.append(f"<div class='tablewrap'><table class='{html.escape(t.cls)}'>{cap}")
            num = t.numeric()
            al = [" class=num" if n else " class=txt" for n in num]
            out.append("<thead><tr>" + "".join(f"<th{al[i]}>{html.escape(c)}</th>" for i, c in enumerate(t.columns))
                       + "</tr></thead><tbody>")
            hl = set(t.highlight)
            out.extend(f"<tr{' class=hl' if j in hl else ''}>" + "".join(f"<td{al[i] if i < len(al) else ''}>{inline(_cell(v))}</td>"
                                                                        for i, v in enumerate(r)) + "</tr>"
                       for j, r in enumerate(t.rows))
            out.append("</tbody></table></div>")
        figs = [f for f in s.figures if Path(f.path).is_file()]
        if figs:
            out.append("<div class='figs'>")
            for f in figs:
                n_fig += 1
                alt = html.escape(f.caption or Path(f.path).stem, quote=True)
                out.append(f"<figure class='{'wide' if f.wide else ''}'><img src='{data_uri(f.path)}' alt=\"{alt}\">"
                           f"<figcaption><span class='n'>Figure {n_fig}.</span> {inline(f.caption)}</figcaption></figure>")
            out.append("</div>")
        if s.command:
            out.append(f"<details class='cmd'><summary>command</summary><pre>{html.escape(s.command)}</pre></details>")
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A pipe table whose columns line up in plain text too (numbers right-aligned, text left-aligned)."""
    num = Table(list(columns), [list(r) for r in rows]).numeric()
    cells = [[str(c) for c in columns]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(3, *(len(r[i]) for r in cells if i < len(r))) for i in range(len(columns))]

    def line(r):
        return "| " + " | ".join((c.rjust(w) if num[i] else c.ljust(w)) for i, (c, w) in enumerate(zip(r, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num[i] else (":" + "-" * (w + 1)) for i, w in enumerate(widths)) + "|"
    return [line(cells[0]), rule] + [line(r) for r in cells[1:]]


def render_markdown(title: str, sections: Sequence[Section], subtitle: str = "", base: Path | None = None) -> str:
    lines = [f"# {title}", "", subtitle, ""] if subtitle else [f"# {title}", ""]
    n_fig = n_tab = 0
    for s in sections:
        lines += [f"{'###' if s.level >= 3 else '##'} {s.title}", ""]
        if s.highlights:
            lines += [" · ".join(f"**{k}**: {v}" for k, v in s.highlights), ""]
        if s.reading:
            lines += [f"> - {r}" for r in s.reading] + [""]
        lines += [p + "\n" for p in s.paragraphs]
        for t in s.tables:
            n_tab += 1
            if t.caption:
                lines += [f"*Table {n_tab}. {t.caption}*", ""]
            lines += markdown_table(t.columns, t.rows) + [""]
        for f in s.figures:
            n_fig += 1
            lines += [f"![{f.caption}]({_relative(f.path, base)})", "", f"*Figure {n_fig}. {f.caption}*", ""]
        if s.command:
            lines += ["```", s.command, "```", ""]
    return "\n".join(lines)


def _relative(path: Path, base: Path | None) -> str:
    """``path`` as a link from ``base`` (the report's folder), so report.md's images resolve where it lies."""
    if base is None:
        return Path(path).as_posix()
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).resolve().as_posix()


def write_report(out_dir: Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    """Write report.html (self-contained) and report.md into out_dir; return the HTML's path."""
    out_dir = Path(out_dir)
    io.write_text(out_dir / REPORT_MD, render_markdown(title, sections, subtitle, base=out_dir), "report")
    path = out_dir / REPORT_HTML
    io.write_text(path, render_html(title, sections, subtitle), "report")
    return path


def _anchor(s: Section, i: int) -> str:
    return s.anchor or f"s{i}"
