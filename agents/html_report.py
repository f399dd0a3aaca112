"""A report as blocks (text, figures, galleries) rendered two ways: ``report.md`` (images linked) and a
self-contained ``report.html`` (every image inlined as a base64 ``data:`` URI, no script, no external request).

Markdown in :class:`Text` blocks (tables, emphasis, code) is rendered with markdown-it-py (CommonMark plus GFM
tables), the parser ``rich`` already depends on.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Figure", "Gallery", "Section", "Text", "html_document", "markdown_document"]


@dataclass(frozen=True)
class Text:
    """Markdown text (tables allowed)."""

    markdown: str


@dataclass(frozen=True)
class Figure:
    """An image file (PNG, GIF, JPEG) with a caption (plain text)."""

    path: Path
    caption: str = ""
    alt: str = ""


@dataclass(frozen=True)
class Gallery:
    """Images shown side by side (wrapping), each with its caption."""

    items: tuple[Figure, ...]
    caption: str = ""


Block = Text | Figure | Gallery


@dataclass
class Section:
    """A titled part of the report (``<h2>`` / ``##``) with its blocks, in order; ``anchor`` is its HTML id."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return path.as_posix()


def markdown_document(title: str, intro: str, sections: Sequence[Section], base: Path) -> str:
    """The report as markdown; image paths relative to ``base`` (the folder the file is written to)."""
    lines = [f"# {title}", "", intro, ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Text):
                lines += [b.markdown, ""]
            elif isinstance(b, Figure):
                lines += [f"![{b.alt or b.caption}]({_rel(b.path, base)})", ""]
                if b.caption:
                    lines += [f"*{b.caption}*", ""]
            else:
                if b.caption:
                    lines += [b.caption, ""]
                for f in b.items:
                    lines += [f"![{f.alt or f.caption}]({_rel(f.path, base)})", ""]
                    if f.caption:
                        lines += [f"*{f.caption}*", ""]
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if not mime.startswith("image/"):
        raise ValueError(f"path={str(path)!r} is not an image (type {mime}); a Figure must be a PNG, GIF or JPEG.")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _figure_html(f: Figure, cls: str = "figure") -> str:
    alt = html.escape(f.alt or f.caption or f.path.stem, quote=True)
    cap = f"<figcaption>{html.escape(f.caption)}</figcaption>" if f.caption else ""
    return f'<figure class="{cls}"><img src="{_data_uri(f.path)}" alt="{alt}">{cap}</figure>'


_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 2rem 4rem; color: #1a1a1a; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
nav { font-size: 0.9rem; margin: 0.6rem 0 1rem; } nav a { margin-right: 0.9rem; }
.note { background: #fff8e1; border-left: 4px solid #E69F00; padding: 0.5rem 0.9rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.5rem; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 0.8rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #444; margin-top: 0.2rem; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.gallery figure { flex: 0 1 auto; max-width: 100%; }  /* images at their own size, never wider than the page */
.gallery figcaption { max-width: 576px; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; }
"""


def html_document(title: str, intro: str, sections: Sequence[Section]) -> str:
    """The report as one self-contained HTML page (images inlined, no script, no external resource)."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">', f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>",
             "</head>", "<body>", f"<h1>{html.escape(title)}</h1>", f'<div class="note">{md.render(intro)}</div>']
    anchors = [s.anchor or f"s{i}" for i, s in enumerate(sections)]
    parts.append("<nav>" + "".join(f'<a href="#{a}">{html.escape(s.title)}</a>'
                                   for a, s in zip(anchors, sections)) + "</nav>")
    for a, s in zip(anchors, sections):
        parts.append(f'<section id="{html.escape(a, quote=True)}"><h2>{html.escape(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Text):
                parts.append(md.render(b.markdown))
            elif isinstance(b, Figure):
                parts.append(_figure_html(b))
            else:
                if b.caption:
                    parts.append(f"<p>{html.escape(b.caption)}</p>")
                parts.append('<div class="gallery">' + "".join(_figure_html(f) for f in b.items) + "</div>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
