"""Integrations: views of a run's ledger in other tools' formats (each imports its tool lazily)."""
