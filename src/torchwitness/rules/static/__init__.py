"""Static analysis of PyTorch training code (Python AST only: nothing is imported or executed).

Rules TW601-TW699 live in ``*_rules.py`` beside this file and share the catalogue with the runtime rules.
``# torchwitness: ignore[TW602]`` on a line suppresses that rule there; ``# torchwitness: ignore`` all rules.
"""

from torchwitness.rules.static.engine import FileResult, ScanResult, scan_file, scan_paths

__all__ = ["FileResult", "ScanResult", "scan_file", "scan_paths"]
