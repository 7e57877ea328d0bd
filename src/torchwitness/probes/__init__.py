"""Probes: hooks that collect training signals on the device, transferred to the host once per audited step, and
dispatch-level observers of which operators ran (:mod:`torchwitness.probes.operators`)."""

from torchwitness.probes.watch import Watch

__all__ = ["Watch"]
