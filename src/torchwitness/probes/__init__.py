"""Probes: what runs inside a training step, observed through native mechanisms (hooks, dispatch modes)."""
