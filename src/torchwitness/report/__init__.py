"""Read-only views of a run's ledger: obligations coverage, the Annex IV dossier, model card and run diff.

Optional libraries (Jinja2, ReportLab, huggingface_hub) are imported only when a format needs them.
"""

from torchwitness.report.build import build_document
from torchwitness.report.card import build_card, validate_card
from torchwitness.report.diff import assert_no_regression, compare
from torchwitness.report.obligations import coverage, load_map
from torchwitness.report.render import write_report

__all__ = ["assert_no_regression", "build_card", "build_document", "compare", "coverage", "load_map",
           "validate_card", "write_report"]
