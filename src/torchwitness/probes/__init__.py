"""Probes: hooks that collect training signals on the device, transferred to the host once per audited step."""

from torchwitness.probes.watch import Watch

__all__ = ["Watch"]
