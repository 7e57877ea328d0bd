"""Model-file safety (rules TW700-TW749): opcode-level pickle inspection and safetensors header checks.

Nothing here unpickles or imports what a file names; see :func:`scan_model`.
"""

from torchwitness.rules.artifact.model_file import ModelScan, model_files, scan_model

__all__ = ["ModelScan", "model_files", "scan_model"]
