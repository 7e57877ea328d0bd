"""The dossier as PDF with ReportLab: the same document model, charts drawn as vector graphics."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from torchwitness.report.model import Chart, Document, Statement, Table, fmt
from torchwitness.report.render import cite
from torchwitness.report.svg import PALETTE, bounds, nice_ticks


def _rl() -> Any:
    try:
        import reportlab
    except ImportError as e:
        raise ImportError("PDF reports need ReportLab: pip install 'torchwitness[reports]'") from e
    return reportlab


def _drawing(chart: Chart, width: float = 460, height: float = 200) -> Any:
    from reportlab.graphics.shapes import Circle, Drawing, Line, PolyLine, String
    from reportlab.lib import colors

    d = Drawing(width, height + 40)
    left, bottom, pw, ph = 44, 28, width - 54, height - 20
    x0, x1, y0, y1 = bounds(chart)
    xt, yt = nice_ticks(x0, x1), nice_ticks(y0, y1)
    if chart.style == "interval":
        xt = [-0.5, *[float(i) for i in range(len(chart.categories or []))], len(chart.categories or []) - 0.5]
    xa, xb, ya, yb = xt[0], xt[-1], yt[0], yt[-1]

    def px(x: float) -> float:
        return left + (x - xa) / ((xb - xa) or 1) * pw

    def py(y: float) -> float:
        return bottom + (y - ya) / ((yb - ya) or 1) * ph

    d.add(String(width / 2, height + 30, chart.title, fontSize=9, textAnchor="middle", fontName="Helvetica-Bold"))
    d.add(Line(left, bottom, left + pw, bottom, strokeColor=colors.grey))
    d.add(Line(left, bottom, left, bottom + ph, strokeColor=colors.grey))
    for t in yt:
        d.add(String(left - 3, py(t) - 3, fmt(t, 3), fontSize=7, textAnchor="end"))
        d.add(Line(left, py(t), left + pw, py(t), strokeColor=colors.Color(.92, .92, .92)))
    labels = [(float(i), n) for i, n in enumerate(chart.categories or [])] if chart.style == "interval" else \
        [(t, fmt(t, 3)) for t in xt]
    for t, text in labels:
        d.add(String(px(t), bottom - 10, text, fontSize=7, textAnchor="middle"))
    d.add(String(left + pw / 2, 2, chart.x_label, fontSize=8, textAnchor="middle"))
    for i, s in enumerate(chart.series):
        c = colors.HexColor(PALETTE[i % len(PALETTE)])
        if chart.style == "line" and len(s.points) > 1:
            d.add(PolyLine([v for x, y in s.points for v in (px(x), py(y))], strokeColor=c, strokeWidth=1.2))
        for j, (x, y) in enumerate(s.points):
            if s.lows and s.highs:
                d.add(Line(px(x), py(s.lows[j]), px(x), py(s.highs[j]), strokeColor=c, strokeWidth=1.2))
            d.add(Circle(px(x), py(y), 2, fillColor=c, strokeColor=c))
        d.add(String(left + 4 + (i % 3) * 150, height + 18 - (i // 3) * 9, s.label, fontSize=7, fillColor=c))
    return d


def render_pdf(doc: Document, path: str | Path) -> Path:
    """Write ``doc`` to ``path`` as PDF (A4)."""
    _rl()
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer
    from reportlab.platypus import Table as RLTable

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7, leading=8.5)
    story: list[Any] = [Paragraph(escape(doc.title), styles["Title"]),
                        Paragraph(escape(f"Run {doc.run_id} · generated {doc.generated}"), styles["BodyText"]),
                        Paragraph(escape(f"Ledger: {doc.verification.get('summary', '')}"), small), Spacer(1, 8)]
    for sec in doc.sections:
        story.append(Paragraph(escape(sec.title), styles["Heading2"]))
        if sec.scope:
            story.append(Paragraph(f"<i>{escape(sec.scope)}</i>", small))
        if not sec.has_evidence:
            more = f" Records that would document this section: {', '.join(sec.missing)}." if sec.missing else ""
            story.append(Paragraph(f"<b>No evidence in this run's ledger.</b>{escape(more)}", styles["BodyText"]))
        for b in sec.blocks:
            if isinstance(b, Statement):
                ref = f' <font color="#0066cc" size="7">[{escape(cite(b.cites))}]</font>' if b.cites else ""
                story.append(Paragraph(escape(b.text) + ref, styles["BodyText"]))
            elif isinstance(b, Table):
                story.append(Paragraph(f"<b>{escape(b.title)}</b>", small))
                data = [[Paragraph(escape(c), small) for c in [*b.columns, "records"]]]
                data += [[Paragraph(escape(c), small) for c in [*row, cite(cs, 4)]]
                         for row, cs in zip(b.rows, b.row_cites, strict=True)]
                t = RLTable(data, repeatRows=1, colWidths=[(17 * cm) / len(data[0])] * len(data[0]))
                t.setStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                            ("BACKGROUND", (0, 0), (-1, 0), colors.Color(.94, .94, .94)),
                            ("VALIGN", (0, 0), (-1, -1), "TOP")])
                story.append(t)
            else:
                story.append(_drawing(b))
                story.append(Paragraph(escape(f"records: {cite(b.cites)}"), small))
            story.append(Spacer(1, 4))
    SimpleDocTemplate(str(path), pagesize=A4, title=doc.title, leftMargin=2 * cm, rightMargin=2 * cm).build(story)
    return Path(path)
