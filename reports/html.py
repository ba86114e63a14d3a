"""HTML pieces of the report page: escaping, tables, colour swatches, lists and paragraphs.

Two escapes: ``esc`` for HTML text and attributes, ``plot_text`` for strings handed to plotly,
which renders a few HTML tags (<b>, <br>, <a>, ...) in titles, legends and hover text and decodes
entities, so escaping ``<``, ``>`` and ``&`` there shows the characters as text.

The helpers that take ``text`` escape it; those that take ``cells`` or ``body`` expect HTML
already built with ``esc``.
"""

import html

from .colors import color_for


def esc(value) -> str:
    """HTML-escape any value for text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def plot_text(value) -> str:
    """Escape a user string for plotly text (trace names, titles, hover)."""
    return html.escape("" if value is None else str(value), quote=False)


def table(headers: list, rows: list, left: tuple = (0,), msg_cols: tuple = ()) -> str:
    """A scrolling table: ``rows`` of already-escaped cell HTML, ``headers`` raw. Column 0 (the
    series) wraps; ``left`` columns are left-aligned, ``msg_cols`` wrap as prose."""
    def cls(j, head=False):
        if j in msg_cols:
            return ' class="msg"'
        if j == 0 and not head:
            return ' class="v"'
        return ' class="l"' if j in left else ""
    head = "".join(f"<th{cls(j, True)}>{esc(h)}</th>" for j, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td{cls(j)}>{c}</td>" for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def swatch(variant: str) -> str:
    """A small square in the variant's colour, to put before its name."""
    return f'<span class="swatch" style="background:{esc(color_for(variant))}"></span>'


def definitions(items: list) -> str:
    """[(term, value)] as a two-column list; empty values are left out."""
    return '<dl class="env">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items
                                        if v not in (None, "")) + "</dl>"


def bullets(texts: list, cls: str = "findings") -> str:
    """Sentences as a list (class "findings": the headline ones; "cross": quieter)."""
    return f'<ul class="{esc(cls)}">' + "".join(f"<li>{esc(t)}</li>" for t in texts) + "</ul>"


def lead(text: str) -> str:
    """The paragraph that opens a section: what it shows."""
    return f'<p class="lead">{esc(text)}</p>'


def note(text: str) -> str:
    """A small grey paragraph."""
    return f'<p class="note">{esc(text)}</p>'


def details(summary: str, body: str) -> str:
    """``body`` folded under a clickable ``summary``."""
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"
