"""Self-contained HTML reports: one file, images embedded as data URIs, no scripts, opens with no network.

An experiment contributes :class:`Section` objects (paragraphs, tables, figures); :func:`write_report`
renders them into ``report.html`` and ``report.md`` beside each other.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from warmstart.engine import io


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    cls: str = ""


@dataclass
class Figure:
    path: Path
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    command: str = ""          # the command that produced it, shown verbatim
    anchor: str = ""


CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d232a}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:2px solid #e3e7ec;padding-bottom:.2em;margin-top:2em}
.meta{color:#5d6b79;font-size:.9em} code,pre{font:13px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#f3f5f7;border-radius:4px}
pre{padding:.6em .8em;overflow-x:auto} code{padding:.1em .3em}
table{border-collapse:collapse;margin:.8em 0;font-variant-numeric:tabular-nums} caption{caption-side:bottom;color:#5d6b79;font-size:.85em;text-align:left;padding-top:.3em}
th,td{border:1px solid #d9dee3;padding:.3em .7em;text-align:right} th{background:#f3f5f7} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%} figure img{max-width:100%;border:1px solid #e3e7ec}
figcaption{color:#5d6b79;font-size:.85em;max-width:640px} nav a{margin-right:1em}
.reading{background:#eef6ee;border-left:4px solid #3c8d40;padding:.5em .9em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    mime = "image/svg+xml" if str(path).endswith(".svg") else "image/png"
    return f"data:{mime};base64,{data}"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return html.escape(str(v))


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<meta name='viewport' content='width=device-width,initial-scale=1'>", f"<style>{CSS}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{html.escape(subtitle or time.strftime('%Y-%m-%d %H:%M'))}</p>"]
    if len(sections) > 1:
        out.append("<nav>" + "".join(f"<a href='#{_anchor(s, i)}'>{html.escape(s.title)}</a>" for i, s in enumerate(sections)) + "</nav>")
    for i, s in enumerate(sections):
        out.append(f"<section id='{_anchor(s, i)}'><h2>{html.escape(s.title)}</h2>")
        for p in s.paragraphs:
            cls = " class='reading'" if p.startswith("Reading:") else ""
            out.append(f"<p{cls}>{html.escape(p)}</p>")
        for t in s.tables:
            out.append(f"<table class='{html.escape(t.cls)}'>" + (f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""))
            out.append("<thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in t.columns) + "</tr></thead><tbody>")
            out.extend("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in t.rows)
            out.append("</tbody></table>")
        for f in s.figures:
            if Path(f.path).is_file():
                out.append(f"<figure><img src='{_img(f.path)}' alt='{html.escape(f.caption or Path(f.path).stem)}'>"
                           f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
        if s.command:
            out.append(f"<p class='meta'>Made by:</p><pre>{html.escape(s.command)}</pre>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def render_markdown(title: str, sections: Sequence[Section], subtitle: str = "", base: Path | None = None) -> str:
    lines = [f"# {title}", "", subtitle, ""] if subtitle else [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [p + "\n" for p in s.paragraphs]
        for t in s.tables:
            lines += ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
            lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in t.rows]
            lines += ([f"\n*{t.caption}*"] if t.caption else []) + [""]
        for f in s.figures:
            rel = Path(f.path).relative_to(base) if base and Path(f.path).is_relative_to(base) else Path(f.path)
            lines += [f"![{f.caption}]({rel.as_posix()})", ""]
        if s.command:
            lines += ["```", s.command, "```", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, title: str, sections: Sequence[Section], subtitle: str = "") -> Path:
    """Write report.html (self-contained) and report.md into out_dir; return the HTML's path."""
    out_dir = Path(out_dir)
    io.write_text(out_dir / "report.md", render_markdown(title, sections, subtitle, base=out_dir), "report")
    path = out_dir / "report.html"
    io.write_text(path, render_html(title, sections, subtitle), "report")
    return path


def _anchor(s: Section, i: int) -> str:
    return s.anchor or f"s{i}"
