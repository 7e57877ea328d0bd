"""Exporters of a run's evidence to other systems (MLflow, OpenTelemetry, RDF). Each imports its library lazily."""
