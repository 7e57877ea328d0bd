"""Controls: stateful safeguards that act and leave evidence (fairness, consent, provenance, privacy budget,
drift, human review, content retention)."""
