"""Render the dossier's document model as self-contained HTML or Markdown (Jinja2), or PDF (see ``pdf.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from torchwitness.errors import InputError
from torchwitness.report.model import Document, fmt
from torchwitness.report.svg import chart_svg

Format = Literal["html", "md", "pdf"]


def cite(seqs: list[int], limit: int = 8, link: Callable[[int], str] | None = None) -> str:
    """``seq 3, 4, 7`` with a count beyond ``limit``; ``link`` renders each seq (e.g. as a hyperlink)."""
    if not seqs:
        return ""
    shown = ", ".join(link(s) if link else str(s) for s in seqs[:limit])
    return f"seq {shown}" + (f" … (+{len(seqs) - limit})" if len(seqs) > limit else "")


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _env(autoescape: bool) -> Any:
    try:
        import jinja2
    except ImportError as e:
        raise ImportError("reports need Jinja2: pip install 'torchwitness[reports]'") from e
    env = jinja2.Environment(loader=jinja2.PackageLoader("torchwitness.report", "templates"),
                             autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.globals.update(cite=cite, svg=chart_svg, fmt=fmt)
    env.filters["md"] = _md_escape
    return env


def evidence_json(doc: Document) -> str:
    """The verification data for the page's script; ``<`` escaped so no record can close the script element."""
    v = doc.verification
    data = {k: v.get(k) for k in ("checkpoint", "verifier_key", "proofs", "root", "signer")}
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def render_html(doc: Document) -> str:
    js = resources.files("torchwitness.report").joinpath("templates/verify.js").read_text()
    return _env(True).get_template("dossier.html.j2").render(doc=doc, evidence_json=evidence_json(doc), verify_js=js)


def render_md(doc: Document) -> str:
    return _env(False).get_template("dossier.md.j2").render(doc=doc)


def write_report(doc: Document, path: str | Path, fmt_: Format) -> Path:
    """Write ``doc`` as ``fmt_`` to ``path``; returns the path."""
    path = Path(path)
    if fmt_ == "html":
        path.write_text(render_html(doc), encoding="utf-8")
    elif fmt_ == "md":
        path.write_text(render_md(doc), encoding="utf-8")
    elif fmt_ == "pdf":
        from torchwitness.report.pdf import render_pdf

        render_pdf(doc, path)
    else:
        raise InputError(f"unknown report format {fmt_!r}; use html, pdf or md")
    return path
