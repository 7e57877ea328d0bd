"""Probes: read signals off PyTorch objects (models, generation calls, agent steps) without changing them."""
