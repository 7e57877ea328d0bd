"""Controls that act inside the training loop and leave evidence: fairness, consent, provenance, privacy."""
