"""HTML building blocks: escaping, tables, sections, the page shell and its inline stylesheet."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape


def e(value) -> str:
    """Escape any value for HTML text or attribute context."""
    return escape(str(value), quote=True)


class Raw(str):
    """Markup that is already safe; table cells and sections insert it unescaped."""


def cell(value) -> str:
    return value if isinstance(value, Raw) else e(value)


def table(headers: Sequence[str], rows: Iterable[Sequence], num_cols: Iterable[int] = (),
          row_classes: Sequence[str] | None = None, cls: str = "") -> Raw:
    """A ``<table>``; columns in ``num_cols`` are right-aligned with tabular digits."""
    nums = set(num_cols)
    head = "".join(f'<th{" class=num" if i in nums else ""} scope="col">{e(h)}</th>'
                   for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        klass = f' class="{e(row_classes[r])}"' if row_classes and row_classes[r] else ""
        tds = "".join(f'<td{" class=num" if i in nums else ""}>{cell(v)}</td>' for i, v in enumerate(row))
        body.append(f"<tr{klass}>{tds}</tr>")
    return Raw(f'<div class="scroll"><table class="{e(cls)}"><thead><tr>{head}</tr></thead>'
               f'<tbody>{"".join(body)}</tbody></table></div>')


def section(anchor: str, title: str, *parts: str, intro: str = "") -> Raw:
    """A titled ``<section>``; ``intro`` is escaped plain text, ``parts`` are :class:`Raw` markup."""
    lead = f'<p class="intro">{e(intro)}</p>' if intro else ""
    return Raw(f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{lead}{"".join(parts)}</section>')


def note(text: str) -> Raw:
    """A visible remark for a skipped or partial section."""
    return Raw(f'<p class="note">{e(text)}</p>')


def para(text: str) -> Raw:
    return Raw(f"<p>{e(text)}</p>")


def figure(svg: str, caption: str) -> Raw:
    return Raw(f'<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>')


def details(summary: str, text: str) -> Raw:
    return Raw(f"<details><summary>{e(summary)}</summary><pre>{e(text)}</pre></details>")


def page(title: str, header: str, nav: Sequence[tuple[str, str]], body: Sequence[str]) -> str:
    """The whole document: one file, inline CSS, no scripts, no external resources."""
    links = "".join(f'<a href="#{e(a)}">{e(t)}</a>' for a, t in nav)
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body><main>"
            f"{header}<nav aria-label=\"Sections\">{links}</nav>{''.join(body)}"
            "</main></body></html>\n")


CSS = """
:root { --ink:#1d2127; --muted:#5b6470; --line:#dde1e6; --bg:#f4f5f7; --card:#fff; --accent:#0b5cad;
        --good:#1a7f37; --caution:#9a6700; --bad:#c62828; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink); line-height:1.5; font-size:15px;
       font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1120px; margin:0 auto; padding:24px 20px 64px; }
header.top { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:22px 26px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:20px; margin:0 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:16px; margin:22px 0 6px; }
.sub { color:var(--muted); margin:0 0 14px; }
dl.meta { display:grid; grid-template-columns:max-content 1fr; gap:3px 16px; margin:0 0 16px; }
dl.meta dt { color:var(--muted); } dl.meta dd { margin:0; overflow-wrap:anywhere; }
.verdict { border-left:6px solid var(--good); background:#eef7f0; padding:12px 16px; border-radius:6px; }
.verdict.caution { border-color:var(--caution); background:#fff8e6; }
.verdict.warning { border-color:var(--bad); background:#fdeeee; }
.verdict .headline { font-size:17px; font-weight:600; margin:0 0 4px; }
.verdict p { margin:0; }
nav { display:flex; flex-wrap:wrap; gap:6px 14px; margin:14px 4px 4px; font-size:14px; }
nav a, a { color:var(--accent); text-decoration:none; } nav a:hover { text-decoration:underline; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 24px;
          margin-top:18px; }
p.intro { color:var(--muted); margin:0 0 12px; max-width:78ch; }
p.note { color:var(--muted); font-style:italic; background:#f2f3f5; border-radius:6px; padding:8px 12px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; font-size:14px; margin:6px 0 10px; min-width:50%; }
th, td { padding:6px 10px; text-align:left; vertical-align:top; border-bottom:1px solid var(--line); }
th { background:#eceff3; font-weight:600; white-space:nowrap; }
tbody tr:nth-child(even) { background:#f8f9fb; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.best { background:#e3eefb !important; font-weight:600; }
tr.total { border-top:2px solid #b9c0c9; font-weight:600; }
table.examples td:last-child { width:60%; min-width:24ch; white-space:pre-wrap; overflow-wrap:anywhere; }
.tag { display:inline-block; white-space:nowrap; font-size:12px; padding:1px 7px; border-radius:10px;
       background:#eceff3; }
.tag.bad { background:#fbe3e3; color:#8e1b1b; } .tag.ok { background:#e3f3e7; color:#1a5e2e; }
figure { margin:8px 0 14px; } figure svg { width:100%; height:auto; max-width:980px; display:block; }
figure.narrow svg { max-width:560px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; max-width:90ch; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(300px,1fr)); gap:10px 28px;
         align-items:start; }
table.confusion td, table.confusion th { text-align:center; min-width:9ch; }
table.confusion td.hit { background:#e3f3e7; } table.confusion td.miss { background:#fbe3e3; }
details { margin:8px 0; } summary { cursor:pointer; font-weight:600; }
pre { background:#f6f8fa; border:1px solid var(--line); border-radius:6px; padding:10px 12px;
      overflow:auto; max-height:560px; font-size:12.5px; }
ul.legend { margin:4px 0 0; padding-left:20px; color:var(--muted); font-size:14px; }
@media print { body { background:#fff; } nav { display:none; }
               section, header.top { border:none; padding:8px 0; } }
"""
