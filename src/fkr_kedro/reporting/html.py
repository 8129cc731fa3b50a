"""One self-contained HTML page: every image embedded as base64, no external resource."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import pandas as pd
from matplotlib.figure import Figure

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1300px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
.meta { color: #666; font-size: 0.85rem; } li { margin: 0.35rem 0; }
"""


@dataclass
class ReportFigure:
    """An image for the report: PNG bytes, a title and a caption."""

    title: str
    png: bytes
    caption: str = ""

    @classmethod
    def from_figure(cls, title: str, figure: Figure, caption: str = "", dpi: int = 110) -> ReportFigure:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
        return cls(title, buffer.getvalue(), caption)


@dataclass
class Section:
    """A titled part of the report: sentences, tables and figures, in that order."""

    title: str
    sentences: list[str] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (caption, HTML from format_table)
    figures: list[ReportFigure] = field(default_factory=list)
    intro: str = ""


def format_table(table: pd.DataFrame, percent_columns: list[str] | None = None) -> str:
    """A table as HTML: percentages where named, three significant decimals elsewhere."""
    percent = set(percent_columns or [])
    formatters = {}
    for column in table.columns:
        if "points" in column:
            formatters[column] = lambda v: "" if pd.isna(v) else f"{v:+.1f}"
        elif column in percent:
            formatters[column] = lambda v: "" if pd.isna(v) else f"{100 * v:.1f}%"
        elif pd.api.types.is_float_dtype(table[column]):
            formatters[column] = lambda v: "" if pd.isna(v) else (f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}")
    return table.to_html(formatters=formatters, border=0, na_rep="", escape=True)


def render(title: str, meta: list[str], sections: list[Section]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="meta">{html.escape(line)}</p>' for line in meta]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{html.escape(section.intro)}</p>")
        if section.sentences:
            parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in section.sentences) + "</ul>")
        for caption, table_html in section.tables:
            if caption:
                parts.append(f"<p>{html.escape(caption)}</p>")
            parts.append(table_html)
        for fig in section.figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
