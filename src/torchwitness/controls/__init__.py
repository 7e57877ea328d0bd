"""Controls: stateful safeguards around a model (content retention, consent, budgets, drift, review)."""
