"""Probes: read signals off PyTorch objects (training steps, operators, generation calls, agent steps, served
batches) on the device, moving them to the host once per audited step or request."""

from torchwitness.probes.watch import Watch

__all__ = ["Watch"]
