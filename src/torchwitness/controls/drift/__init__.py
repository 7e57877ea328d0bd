"""Drift monitoring: reference capture, streaming KS/PSI/MMD/prediction-shift tests, ``drift.alert`` records."""

from torchwitness.controls.drift.monitor import DriftAlert, DriftMonitor, DriftReference

__all__ = ["DriftAlert", "DriftMonitor", "DriftReference"]
