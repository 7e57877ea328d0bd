"""Read-only views of a run's ledger: obligations coverage, the Annex IV dossier, model card and run diff."""
