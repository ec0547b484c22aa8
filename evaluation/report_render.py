"""The report as a document: a list of blocks, rendered to Markdown and to one HTML file.

The HTML embeds every image as a base64 PNG `data:` URI and carries its own CSS, so it is
a single file that any browser shows without a server. The Markdown links the PNG files
by relative path, for reading on GitHub or in an editor next to the plots.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric_columns: set[int] = field(default_factory=set)  # right-aligned


@dataclass(frozen=True)
class Image:
    path: Path
    alt: str


Block = Heading | Paragraph | Table | Image

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #3c78b4; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0 1.4em; font-size: 14px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
th, td { border: 1px solid #ccc; padding: .25em .7em; }
th { background: #eef3f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
"""


def _markdown_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block], relative_to: str | os.PathLike) -> str:
    """Markdown text; images link their files relative to `relative_to` (the report folder)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"**{block.caption}**", ""]
            aligns = ["---:" if i in block.numeric_columns else "---" for i in range(len(block.headers))]
            lines.append("| " + " | ".join(_markdown_cell(h) for h in block.headers) + " |")
            lines.append("| " + " | ".join(aligns) + " |")
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            link = Path(os.path.relpath(block.path, relative_to)).as_posix()
            lines += [f"![{block.alt}]({link})", ""]
    return "\n".join(lines)


def to_html(blocks: list[Block], title: str) -> str:
    """A self-contained HTML page: inline CSS, images as base64 `data:` URIs."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Image):
            encoded = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(block.alt)}">'
                        f"<figcaption>{html.escape(block.alt)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _html_table(table: Table) -> str:
    parts = ["<table>"]
    if table.caption:
        parts.append(f"<caption>{html.escape(table.caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr></thead>")
    parts.append("<tbody>")
    for row in table.rows:
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if i in table.numeric_columns
                        else f"<td>{html.escape(c)}</td>" for i, c in enumerate(row))
        parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)
