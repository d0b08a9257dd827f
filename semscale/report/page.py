"""The report page: one self-contained HTML file (inline CSS, no scripts, no network) whose figures are
PNG files beside it, referenced by relative paths, so the folder opens from disk or from any web server."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Section", "render"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
p.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; display: block; margin: 0.6em 0; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
footer { margin-top: 3em; color: #777; font-size: 0.8em; }
"""


@dataclass(frozen=True)
class Section:
    """A heading, a note, and figures (file names beside the page) and/or one table (header, rows)."""

    title: str
    note: str = ""
    images: Sequence[str] = field(default_factory=tuple)
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join([*out, "</table>"])


def render(*, title: str, sections: Sequence[Section], footer: str) -> str:
    """The page's HTML."""
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", "<nav>" + " · ".join(
        f'<a href="#s{k}">{e(s.title.split(" — ")[0])}</a>' for k, s in enumerate(sections)) + "</nav>"]
    for k, s in enumerate(sections):
        body.append(f'<h2 id="s{k}">{e(s.title)}</h2>')
        if s.note:
            body.append(f'<p class="note">{e(s.note)}</p>')
        body += [f'<img src="{e(name)}" alt="{e(name.rsplit(".", 1)[0])}">' for name in s.images]
        if s.table is not None:
            body.append(_table(*s.table))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body)
            + f"\n<footer>{e(footer)}</footer>\n</body>\n</html>\n")
