"""The dossier as PDF with ReportLab: the same document model, charts drawn as vector graphics.

Every page is numbered, every section (and the appendix) is a bookmark in the PDF outline, and every cited seq
links to its row in the appendix "Cited records", which lists each record's kind, step and time.
"""

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


def _cite_links(seqs: list[int], limit: int = 8) -> str:
    """``cite``'s text with each seq a link to its row in the appendix (ReportLab paragraph markup)."""
    return cite(seqs, limit, link=lambda s: f'<a href="#seq-{s}" color="#0066cc">{s}</a>')


def _cited_records(doc: Document) -> list[tuple[int, str, str, str]]:
    """(seq, kind, step, recorded) of every cited record, read from the run folder; none if it cannot be read."""
    import datetime as dt

    from torchwitness.errors import TorchWitnessError
    from torchwitness.ledger.reader import iter_records

    cited = set(doc.cited())
    rows = []
    try:
        for r in iter_records(doc.run_dir):
            if r["seq"] in cited:
                when = dt.datetime.fromtimestamp(r["ts"] / 1e6, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                rows.append((r["seq"], r["kind"], "" if r.get("step") is None else str(r["step"]), when))
    except (OSError, TorchWitnessError):  # a sharded run keeps its records per rank: the links then go nowhere
        return []
    return rows


def _outline(key: str, title: str) -> Any:
    """A zero-size flowable that makes its place a bookmark in the PDF outline."""
    from reportlab.platypus import Flowable

    class Bookmark(Flowable):
        def wrap(self, *_: Any) -> tuple[float, float]:
            return 0, 0

        def draw(self) -> None:
            self.canv.bookmarkPage(key)
            self.canv.addOutlineEntry(title, key, level=0)

    return Bookmark()


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
        story += [_outline(f"section-{sec.key}", sec.title), Paragraph(escape(sec.title), styles["Heading2"])]
        if sec.scope:
            story.append(Paragraph(f"<i>{escape(sec.scope)}</i>", small))
        if not sec.has_evidence:
            more = f" Records that would document this section: {', '.join(sec.missing)}." if sec.missing else ""
            story.append(Paragraph(f"<b>No evidence in this run's ledger.</b>{escape(more)}", styles["BodyText"]))
        for b in sec.blocks:
            if isinstance(b, Statement):
                ref = f' <font color="#0066cc" size="7">[{_cite_links(b.cites)}]</font>' if b.cites else ""
                story.append(Paragraph(escape(b.text) + ref, styles["BodyText"]))
            elif isinstance(b, Table):
                story.append(Paragraph(f"<b>{escape(b.title)}</b>", small))
                data = [[Paragraph(escape(c), small) for c in [*b.columns, "records"]]]
                data += [[*(Paragraph(escape(c), small) for c in row), Paragraph(_cite_links(cs, 4), small)]
                         for row, cs in zip(b.rows, b.row_cites, strict=True)]
                t = RLTable(data, repeatRows=1, colWidths=[(17 * cm) / len(data[0])] * len(data[0]))
                t.setStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                            ("BACKGROUND", (0, 0), (-1, 0), colors.Color(.94, .94, .94)),
                            ("VALIGN", (0, 0), (-1, -1), "TOP")])
                story.append(t)
            else:
                story.append(_drawing(b))
                story.append(Paragraph(f"records: {_cite_links(b.cites)}", small))
            story.append(Spacer(1, 4))
    story += _appendix(doc, styles, small)

    def footer(canvas: Any, _: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.drawString(2 * cm, 1.2 * cm, f"Run {doc.run_id}")
        canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, f"page {canvas.getPageNumber()}")
        canvas.restoreState()

    template = SimpleDocTemplate(str(path), pagesize=A4, title=doc.title, leftMargin=2 * cm, rightMargin=2 * cm)
    template.build(story, onFirstPage=footer, onLaterPages=footer)
    return Path(path)


def _appendix(doc: Document, styles: Any, small: Any) -> list[Any]:
    from reportlab.lib import colors
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph
    from reportlab.platypus import Table as RLTable

    rows = _cited_records(doc)
    if not rows:
        return []
    data = [[Paragraph(f"<b>{c}</b>", small) for c in ("seq", "kind", "step", "recorded")]]
    data += [[Paragraph(f'<a name="seq-{seq}"/>{seq}', small), Paragraph(escape(kind), small),
              Paragraph(step, small), Paragraph(when, small)] for seq, kind, step, when in rows]
    table = RLTable(data, repeatRows=1, colWidths=[2 * cm, 7 * cm, 2.5 * cm, 5.5 * cm])
    table.setStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.Color(.94, .94, .94))])
    note = ("Each record below is cited in this document; its full content, and the proof that it belongs to "
            "the signed ledger, come from <font face='Courier'>torchwitness show</font> and "
            "<font face='Courier'>torchwitness prove</font> on the run folder.")
    return [_outline("cited-records", "Cited records"), Paragraph("Cited records", styles["Heading2"]),
            Paragraph(note, small), table]
