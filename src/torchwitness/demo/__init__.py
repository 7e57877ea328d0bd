"""``make demo``: train a classifier on UCI Adult with every step recorded, then verify the evidence."""

from torchwitness.demo.pipeline import run_demo

__all__ = ["run_demo"]
